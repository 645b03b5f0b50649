"""The shape of a wrangler config (TOML or JSON): pydantic models that refuse what they do not
know, and the resolved `WorkerConfig` one worker runs with."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

log = logging.getLogger("durable.config")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_BINDING = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ConfigError(Exception):
    """A wrangler.toml that cannot be used, with where and why."""

    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        self.path, self.key, self.problem = str(path), key, problem
        super().__init__(f"{path}: {key}: {problem}" if key else f"{path}: {problem}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _binding_name(value: str) -> str:
    if not _BINDING.match(value):
        raise ValueError(f"{value!r} is not a valid binding name (letters, digits, _; not starting with a digit)")
    return value


class DurableObjectBinding(_Strict):
    name: str
    class_name: str
    script_name: str | None = None

    _check_name = field_validator("name")(_binding_name)


class DurableObjects(_Strict):
    bindings: list[DurableObjectBinding] = Field(default_factory=list)


class Migration(_Strict):
    tag: str
    new_sqlite_classes: list[str] = Field(default_factory=list)
    new_classes: list[str] = Field(default_factory=list)
    renamed_classes: list[dict[str, str]] = Field(default_factory=list)
    deleted_classes: list[str] = Field(default_factory=list)

    @field_validator("renamed_classes")
    @classmethod
    def _renames(cls, value: list[dict[str, str]]) -> list[dict[str, str]]:
        for item in value:
            if set(item) != {"from", "to"}:
                raise ValueError("each renamed class is {from = \"Old\", to = \"New\"}")
        return value


class ServiceBinding(_Strict):
    binding: str
    service: str
    environment: str | None = None
    entrypoint: str | None = None

    _check_binding = field_validator("binding")(_binding_name)


class KVNamespace(_Strict):
    binding: str
    id: str | None = None
    preview_id: str | None = None

    _check_binding = field_validator("binding")(_binding_name)


class R2BucketBinding(_Strict):
    binding: str
    bucket_name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")  # R2's bucket naming rule
    preview_bucket_name: str | None = None
    jurisdiction: str | None = None  # Cloudflare's data location (eu, fedramp): no effect here
    # Ours: keep the bucket in an S3-compatible store (R2 itself, S3, MinIO) instead of the runtime's own
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str = "auto"
    s3_prefix: str = ""

    _check_binding = field_validator("binding")(_binding_name)


class D1DatabaseBinding(_Strict):
    binding: str
    database_name: str
    database_id: str | None = None
    preview_database_id: str | None = None
    migrations_dir: str = "migrations"
    migrations_table: str = Field(default="d1_migrations", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    _check_binding = field_validator("binding")(_binding_name)

    @property
    def key(self) -> str:
        """What names its file under the state directory (`wrangler dev` and `wrangler d1` alike)."""
        return self.preview_database_id or self.database_id or self.database_name


class WorkflowBinding(_Strict):
    name: str
    binding: str
    class_name: str
    script_name: str | None = None

    _check_binding = field_validator("binding")(_binding_name)


class AssetsConfig(_Strict):
    """`assets`: a folder of static files served before the worker (Cloudflare's Workers assets)."""
    directory: str
    binding: str | None = None
    run_worker_first: bool | list[str] = False
    html_handling: Literal["auto-trailing-slash", "force-trailing-slash", "drop-trailing-slash", "none"] = \
        "auto-trailing-slash"
    not_found_handling: Literal["single-page-application", "404-page", "none"] = "none"

    @field_validator("binding")
    @classmethod
    def _check_binding(cls, value: str | None) -> str | None:
        return None if value is None else _binding_name(value)


class Secrets(_Strict):
    required: list[str] = Field(default_factory=list)
    # Our extension: loaded when provided, never generated or demanded (e.g. provider keys
    # whose absence switches a worker to local provider servers in dev).
    optional: list[str] = Field(default_factory=list)


class Triggers(_Strict):
    crons: list[str] = Field(default_factory=list)

    @field_validator("crons")
    @classmethod
    def _valid_crons(cls, value: list[str]) -> list[str]:
        from croniter import croniter
        for expression in value:
            if not croniter.is_valid(expression):
                raise ValueError(f"{expression!r} is not a cron expression (minute hour day month weekday)")
        return value


class Dev(_Strict):
    ip: str | None = None
    port: int | None = Field(default=None, ge=0, le=65535)


def _check_worker_name(value: str | None) -> str | None:
    if value is not None and not _NAME.match(value):
        raise ValueError(f"{value!r} is not a valid worker name (lowercase letters, digits and dashes)")
    return value


class EnvOverride(_Strict):
    """One `[env.<name>]` section: inheritable keys override, bindings replace."""

    name: str | None = None
    main: str | None = None
    compatibility_date: str | None = None
    compatibility_flags: list[str] | None = None
    vars: dict[str, Any] | None = None
    durable_objects: DurableObjects | None = None
    services: list[ServiceBinding] | None = None
    kv_namespaces: list[KVNamespace] | None = None
    r2_buckets: list[R2BucketBinding] | None = None
    d1_databases: list[D1DatabaseBinding] | None = None
    assets: AssetsConfig | None = None
    workflows: list[WorkflowBinding] | None = None
    triggers: Triggers | None = None
    secrets: Secrets | None = None

    _check_name = field_validator("name")(_check_worker_name)


class RawConfig(_Strict):
    schema_: str | None = Field(default=None, alias="$schema")  # editors' schema hint (JSON configs)
    name: str
    main: str
    compatibility_date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    compatibility_flags: list[str] = Field(default_factory=list)
    workers_dev: bool | None = None
    vars: dict[str, Any] = Field(default_factory=dict)
    durable_objects: DurableObjects = Field(default_factory=DurableObjects)
    migrations: list[Migration] = Field(default_factory=list)
    services: list[ServiceBinding] = Field(default_factory=list)
    kv_namespaces: list[KVNamespace] = Field(default_factory=list)
    r2_buckets: list[R2BucketBinding] = Field(default_factory=list)
    d1_databases: list[D1DatabaseBinding] = Field(default_factory=list)
    assets: AssetsConfig | None = None
    workflows: list[WorkflowBinding] = Field(default_factory=list)
    triggers: Triggers = Field(default_factory=Triggers)
    observability: dict[str, Any] = Field(default_factory=dict)  # Cloudflare's log settings: no effect here
    secrets: Secrets | None = None
    dev: Dev = Field(default_factory=Dev)
    env: dict[str, EnvOverride] = Field(default_factory=dict)

    _check_name = field_validator("name")(_check_worker_name)


class WorkerConfig(_Strict):
    """One worker, resolved for one environment (None = top level)."""

    path: Path
    environment: str | None
    name: str
    main: str
    compatibility_date: str
    compatibility_flags: list[str]
    vars: dict[str, Any]
    durable_objects: list[DurableObjectBinding]
    migrations: list[Migration]
    services: list[ServiceBinding]
    kv_namespaces: list[KVNamespace]
    r2_buckets: list[R2BucketBinding]
    d1_databases: list[D1DatabaseBinding] = Field(default_factory=list)
    assets: AssetsConfig | None = None
    workflows: list[WorkflowBinding] = Field(default_factory=list)
    # bindings of kinds this runtime does not run (Workers AI, Queues, …): binding name → kind
    unsupported_bindings: dict[str, str] = Field(default_factory=dict)
    triggers: Triggers
    secrets: Secrets | None
    dev: Dev

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def hosted_classes(self) -> list[str]:
        """Durable Object classes this worker defines (bindings without a script_name elsewhere)."""
        seen: list[str] = []
        for b in self.durable_objects:
            if (b.script_name is None or b.script_name == self.name) and b.class_name not in seen:
                seen.append(b.class_name)
        return seen

    def created_as(self, class_name: str) -> str:
        """The name a class had when a migration created it (renames keep its objects and ids)."""
        for migration in reversed(self.migrations):
            for rename in migration.renamed_classes:
                if rename["to"] == class_name:
                    class_name = rename["from"]
        return class_name

    @property
    def sqlite_classes(self) -> set[str]:
        """Classes created with new_sqlite_classes (under their names after renames): they get SQL."""
        classes: set[str] = set()
        for migration in self.migrations:
            classes |= set(migration.new_sqlite_classes)
            for rename in migration.renamed_classes:
                if rename["from"] in classes:
                    classes.discard(rename["from"])
                    classes.add(rename["to"])
            classes -= set(migration.deleted_classes)
        return classes

    @property
    def dependencies(self) -> set[str]:
        """Worker names this one binds to: services, and Durable Object classes of other scripts."""
        deps = {s.service for s in self.services}
        deps |= {b.script_name for b in self.durable_objects if b.script_name and b.script_name != self.name}
        return deps


