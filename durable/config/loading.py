"""Reading a wrangler config: parse, validate (strictly, or with unknown keys as warnings as
`wrangler dev` has them), resolve an environment, check migrations; finding configs in folders."""
from __future__ import annotations

import logging
import tomllib
from pathlib import Path
from typing import Any

import json5
from pydantic import ValidationError

from .schema import (
    ConfigError,
    RawConfig,
    Triggers,
    WorkerConfig,
)

log = logging.getLogger("durable.config")


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _validation_error(path: Path, exc: ValidationError, prefix: str = "") -> ConfigError:
    first = exc.errors()[0]
    key = _loc(tuple(first["loc"]))
    problem = first["msg"]
    if first["type"] == "extra_forbidden":
        problem = "unknown key"
    elif first["type"] == "missing":
        problem = "required key is missing"
    more = len(exc.errors()) - 1
    if more:
        problem += f" (and {more} more problem{'s' if more > 1 else ''})"
    return ConfigError(path, prefix + key, problem)


def _check_migrations(path: Path, raw: RawConfig, hosted: list[str]) -> None:
    tags: set[str] = set()
    declared: set[str] = set()
    for i, migration in enumerate(raw.migrations):
        if migration.tag in tags:
            raise ConfigError(path, f"migrations[{i}].tag", f"duplicate migration tag {migration.tag!r}")
        tags.add(migration.tag)
        for cls in migration.new_sqlite_classes + migration.new_classes:
            if cls in declared:
                raise ConfigError(path, f"migrations[{i}]", f"class {cls!r} is created twice")
            declared.add(cls)
        for rename in migration.renamed_classes:
            if rename["from"] not in declared:
                raise ConfigError(path, f"migrations[{i}].renamed_classes",
                                  f"cannot rename {rename['from']!r}: no earlier migration creates it")
            declared.discard(rename["from"])
            declared.add(rename["to"])
        for cls in migration.deleted_classes:
            if cls not in declared:
                raise ConfigError(path, f"migrations[{i}].deleted_classes",
                                  f"cannot delete {cls!r}: no earlier migration creates it")
            declared.discard(cls)
    for cls in hosted:
        if cls not in declared:
            raise ConfigError(path, "migrations",
                              f"Durable Object class {cls!r} is bound but no migration declares it "
                              f"(add it to new_sqlite_classes of a [[migrations]] entry)")


# Cloudflare's binding kinds this runtime does not run: a config naming them still loads (outside
# strict mode), and the worker finds a binding that says so when it is used
UNSUPPORTED_KINDS = ("ai", "vectorize", "queues", "hyperdrive", "analytics_engine_datasets", "browser",
                     "send_email", "dispatch_namespaces", "mtls_certificates", "images",
                     "version_metadata", "worker_loaders", "secrets_store_secrets", "pipelines", "unsafe")


def _binding_names(value: Any) -> list[str]:
    """The binding names in one kind's config (an object, a list of them, or queues' producers)."""
    if isinstance(value, dict):
        if isinstance(value.get("binding"), str):
            return [value["binding"]]
        return [name for part in value.values() for name in _binding_names(part)]
    if isinstance(value, list):
        return [name for part in value for name in _binding_names(part)]
    return []


def _tolerated(path: Path, data: dict[str, Any], exc: ValidationError) -> tuple[dict[str, Any], dict[str, str]]:
    """`data` without the keys pydantic does not know, each named in a warning (as wrangler warns),
    and the bindings of the kinds among them; any other problem is still an error."""
    unknown = [tuple(e["loc"]) for e in exc.errors() if e["type"] == "extra_forbidden"]
    if len(unknown) != len(exc.errors()):
        raise _validation_error(path, exc) from None
    unsupported: dict[str, str] = {}
    for loc in unknown:
        parent: Any = data
        for part in loc[:-1]:
            parent = parent[part]
        value = parent.pop(loc[-1])
        kind, where = (loc[0], "") if len(loc) == 1 else (loc[2], f"env.{loc[1]}.") if (
            len(loc) == 3 and loc[0] == "env") else (None, "")
        if kind in UNSUPPORTED_KINDS:  # keyed by where they are declared (bindings are not inherited)
            unsupported.update((f"{where}{name}", str(kind)) for name in _binding_names(value))
            log.warning("%s: %r bindings are not run by this runtime (%s); using one raises an error",
                        path, f"{where}{kind}", ", ".join(_binding_names(value)) or "none")
        else:
            log.warning("%s: unknown key %s is ignored", path, _loc(loc))
    return data, unsupported


def _for_environment(unsupported: dict[str, str], environment: str | None) -> dict[str, str]:
    """The unsupported bindings of the environment run (the top level's, or `[env.<name>]`'s)."""
    prefix = f"env.{environment}." if environment is not None else ""
    return {name[len(prefix):]: kind for name, kind in unsupported.items()
            if name.startswith(prefix) and (prefix or not name.startswith("env."))}


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    try:
        data = json5.loads(text) if path.suffix in (".json", ".jsonc") else tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    except ValueError as exc:
        raise ConfigError(path, "", f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(path, "", "the configuration must be an object")
    return data


def _validated(path: Path, data: dict[str, Any], strict: bool) -> tuple[RawConfig, dict[str, str]]:
    try:
        return RawConfig.model_validate(data), {}
    except ValidationError as exc:
        if strict:
            raise _validation_error(path, exc) from None
        data, unsupported = _tolerated(path, data, exc)
    try:
        return RawConfig.model_validate(data), unsupported
    except ValidationError as again:
        raise _validation_error(path, again) from None


def load(path: str | Path, environment: str | None = None, *, strict: bool = True) -> WorkerConfig:
    """Read, validate and resolve one wrangler.toml for `environment` (wrangler's `--env`). Not
    `strict` (`wrangler dev`), an unknown key is a warning, as wrangler has it."""
    path = Path(path).resolve()
    raw, unsupported = _validated(path, _read(path), strict)
    values: dict[str, Any] = {
        "name": raw.name, "main": raw.main, "compatibility_date": raw.compatibility_date,
        "compatibility_flags": raw.compatibility_flags, "vars": raw.vars,
        "durable_objects": raw.durable_objects.bindings, "services": raw.services,
        "kv_namespaces": raw.kv_namespaces, "r2_buckets": raw.r2_buckets, "d1_databases": raw.d1_databases, "assets": raw.assets, "workflows": raw.workflows, "triggers": raw.triggers, "secrets": raw.secrets,
    }
    if environment is not None:
        override = raw.env.get(environment)
        if override is None:
            known = ", ".join(sorted(raw.env)) or "none"
            raise ConfigError(path, f"env.{environment}", f"no [env.{environment}] section (environments: {known})")
        # wrangler: inheritable keys fall back to the top level; bindings and vars do not.
        values["name"] = override.name or f"{raw.name}-{environment}"
        for key in ("main", "compatibility_date", "compatibility_flags", "secrets", "assets"):
            if getattr(override, key) is not None:
                values[key] = getattr(override, key)
        values["vars"] = override.vars or {}
        values["durable_objects"] = override.durable_objects.bindings if override.durable_objects else []
        values["services"] = override.services or []
        values["kv_namespaces"] = override.kv_namespaces or []
        values["r2_buckets"] = override.r2_buckets or []
        values["d1_databases"] = override.d1_databases or []
        values["workflows"] = override.workflows or []
        values["triggers"] = override.triggers or Triggers()

    config = WorkerConfig(path=path, environment=environment, migrations=raw.migrations, dev=raw.dev,
                          unsupported_bindings=_for_environment(unsupported, environment), **values)
    if not (path.parent / config.main).is_file():
        raise ConfigError(path, "main", f"entry module {config.main!r} not found next to the config")
    if config.assets is not None and not (path.parent / config.assets.directory).is_dir():
        raise ConfigError(path, "assets.directory", f"{config.assets.directory!r} is not a folder next to the config")
    _check_migrations(path, raw, config.hosted_classes)
    for i, binding in enumerate(config.durable_objects):
        names = [b.name for b in config.durable_objects]
        if names.count(binding.name) > 1:
            raise ConfigError(path, f"durable_objects.bindings[{i}].name", f"binding {binding.name!r} is defined twice")
    return config


CONFIG_NAMES = ("wrangler.json", "wrangler.jsonc", "wrangler.toml")  # wrangler's order of preference


def is_development(values: Any) -> bool:
    """Is this worker (its env, or its config's vars) in development? The `ENVIRONMENT` var says;
    unset means development, as `wrangler dev` runs."""
    return str(values.get("ENVIRONMENT", "development")) == "development"


def config_in(folder: Path) -> Path | None:
    """The folder's wrangler configuration, JSON before TOML as wrangler prefers it."""
    return next((folder / name for name in CONFIG_NAMES if (folder / name).is_file()), None)


def discover(root: str | Path) -> list[Path]:
    """Root's own configuration if it has one, else that of each direct sub-folder."""
    root = Path(root)
    own = config_in(root)
    if own is not None:
        return [own]
    return sorted(found for folder in root.iterdir() if folder.is_dir() and (found := config_in(folder)))
