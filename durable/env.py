"""`env`: a worker's vars, secrets and bindings, and how secrets are found.

Handlers reach it as `from durable import env` (the env of the worker handling the current
request); Durable Objects get it as their constructor's `env` argument.
"""
from __future__ import annotations

import json
import logging
import os
import secrets as secretslib
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from .config import ConfigError, WorkerConfig

log = logging.getLogger("durable.env")

GENERATED_SECRETS_FILE = "dev-secrets.json"
# set by a parent (`wrangler dev --nodes`) that generated and announced the dev secrets already:
# its children make the same values from the same file, and say so only at debug level
ANNOUNCED_ENV = "DURABLE_GENERATED_SECRETS_ANNOUNCED"


class Env:
    """Attribute access to bindings, secrets and vars; its repr never shows a secret."""

    def __init__(self, *, vars: Mapping[str, Any], secrets: Mapping[str, str], bindings: Mapping[str, Any],
                 state_dir: Path | None = None, node: Callable[[], dict[str, Any]] | None = None,
                 audience: str = "", version: str = "") -> None:
        self._node = node
        self._version = version
        self._audience = audience
        self._vars = dict(vars)
        self._secrets = dict(secrets)
        self._bindings = dict(bindings)
        self._isolate: dict[str, Any] = {}
        self._state_dir = state_dir

    @property
    def state_dir(self) -> Path:
        """This worker's own folder under the runtime's local state (`--persist-to`): where it may
        keep files that must survive restarts, never inside the source tree."""
        if self._state_dir is None:
            raise AttributeError("this env has no local state directory")
        return self._state_dir

    def audience(self) -> str:
        """Who a signed call to this worker from another process names as its recipient: this
        node's id in a cluster, else the worker's name (a call signed for one is good nowhere else)."""
        return self._audience

    def node(self) -> dict[str, Any]:
        """Which node runs this code (for /health and logs): its id, pid and code version, and in
        a cluster the shards it owns and the members it sees (each with its version)."""
        if self._node is None:
            return {"nodeId": "single", "pid": os.getpid(), "cluster": False, "version": self._version}
        return {**self._node(), "cluster": True, "version": self._version}

    def isolate_state(self, name: str, factory: Callable[[], Any]) -> Any:
        """Per-worker in-memory state (what module globals are in a Workers isolate): one module
        may serve several runtimes in this process, so state hangs off the worker's env."""
        try:
            return self._isolate[name]
        except KeyError:
            value = self._isolate[name] = factory()
            return value

    def __getattr__(self, name: str) -> Any:
        for source in (self._bindings, self._secrets, self._vars):
            if name in source:
                return source[name]
        available = ", ".join(sorted({*self._bindings, *self._secrets, *self._vars})) or "none"
        raise AttributeError(f"env has no binding, secret or var named {name!r} (available: {available})")

    def get(self, name: str, default: Any = None) -> Any:
        for source in (self._bindings, self._secrets, self._vars):  # no error message built per miss
            if name in source:
                return source[name]
        return default

    def __contains__(self, name: str) -> bool:
        return name in self._bindings or name in self._secrets or name in self._vars

    @property
    def secret_names(self) -> list[str]:
        return sorted(self._secrets)

    def __repr__(self) -> str:
        parts = [f"{k}={v!r}" for k, v in sorted(self._vars.items())]
        parts += [f"{k}=<secret>" for k in sorted(self._secrets)]
        parts += [f"{k}={v!r}" for k, v in sorted(self._bindings.items())]
        return f"Env({', '.join(parts)})"


_current_env: ContextVar[Env | None] = ContextVar("durable_current_env", default=None)


class UnsupportedBinding:
    """A binding of a kind this runtime does not run (Workers AI, Queues, …): the worker starts,
    and whatever uses it learns why at once."""

    def __init__(self, kind: str, name: str) -> None:
        self._kind, self._name = kind, name

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        raise BindingUnavailable(f"env.{self._name} is a {self._kind!r} binding, which this runtime does not run; "
                                 f"its config was accepted so the rest of the worker runs")

    def __repr__(self) -> str:
        return f"<UnsupportedBinding {self._name} ({self._kind})>"


class BindingUnavailable(RuntimeError):
    """The worker used a binding this runtime does not provide."""


class _EnvProxy:
    """`durable.env`: the Env of the worker handling the current request or start-up hook."""

    def _target(self) -> Env:
        current = _current_env.get()
        if current is None:
            raise RuntimeError("durable.env is only available while a worker handles a request "
                               "(or runs its start-up hooks); Durable Objects use self.env")
        return current

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)

    def __contains__(self, name: str) -> bool:
        return name in self._target()

    def get(self, name: str, default: Any = None) -> Any:
        return self._target().get(name, default)

    def isolate_state(self, name: str, factory: Callable[[], Any]) -> Any:
        return self._target().isolate_state(name, factory)

    def node(self) -> dict[str, Any]:
        return self._target().node()

    def audience(self) -> str:
        return self._target().audience()

    def __repr__(self) -> str:
        current = _current_env.get()
        return repr(current) if current is not None else "<durable.env outside a worker>"


env = _EnvProxy()


def use_env(value: Env) -> Any:
    """Make `value` the current env (returns the token for `_current_env.reset`)."""
    return _current_env.set(value)


def _dev_vars_path(config: WorkerConfig) -> Path:
    if config.environment:
        specific = config.directory / f".dev.vars.{config.environment}"
        if specific.is_file():
            return specific
    return config.directory / ".dev.vars"


def read_dev_vars(config: WorkerConfig) -> dict[str, str]:
    """The worker's `.dev.vars` (or `.dev.vars.<env>`), empty if there is none."""
    path = _dev_vars_path(config)
    if not path.is_file():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _generated_secrets(state_dir: Path, names: list[str]) -> dict[str, str]:
    """Stable per-checkout values for missing dev secrets (shared by all workers, e.g. JWT_KEY)."""
    path = state_dir / GENERATED_SECRETS_FILE
    stored: dict[str, str] = {}
    if path.is_file():
        stored = json.loads(path.read_text())
    changed = False
    for name in names:
        if name not in stored:
            stored[name] = secretslib.token_urlsafe(48)
            changed = True
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(stored, fh)
        tmp.replace(path)
    return {name: stored[name] for name in names}


def find_secrets(config: WorkerConfig, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The worker's secrets that are set: from the process environment (wins) or `.dev.vars`.
    With `[secrets]`, only the names it declares; without, everything in `.dev.vars`."""
    environ = os.environ if environ is None else environ
    from_file = read_dev_vars(config)
    declared = list(config.secrets.required) if config.secrets else None
    names = declared + list(config.secrets.optional) if declared is not None else list(from_file)
    found: dict[str, str] = {}
    for name in names:
        if name in environ:
            found[name] = environ[name]
        elif name in from_file:
            found[name] = from_file[name]
    return found


def missing_secrets(config: WorkerConfig, found: Mapping[str, str]) -> list[str]:
    return [name for name in (config.secrets.required if config.secrets else []) if name not in found]


def load_secrets(config: WorkerConfig, *, state_dir: Path, local_dev: bool,
                 environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Secrets from the process environment (wins) and `.dev.vars` (dotenv format).

    With `[secrets] required`, only those names are loaded; a missing one is an error, except
    in local dev, where it gets a generated per-checkout value and a warning.
    """
    found = find_secrets(config, environ)
    missing = missing_secrets(config, found)
    if missing:
        if not local_dev:
            raise ConfigError(config.path, "secrets.required",
                              f"missing secret(s) {', '.join(missing)}: set them in the process environment")
        found.update(_generated_secrets(state_dir, missing))
        announced = (os.environ if environ is None else environ).get(ANNOUNCED_ENV) == "1"
        for name in missing:
            log.log(logging.DEBUG if announced else logging.WARNING, "%s: secret %s is not set (environment or %s); using a generated local value "
                        "kept in %s", config.name, name, _dev_vars_path(config).name, state_dir / GENERATED_SECRETS_FILE)
    return found
