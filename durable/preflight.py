"""Production start-up checks, all of them before anything starts: one line per problem, across
every worker, so an operator fixes everything in one go instead of meeting problems one restart
at a time.

The runtime checks what is generic (required secrets are set); a worker adds its own checks by
defining `startup_problems(env) -> list[str]` in its `main` module (weak keys, provider
secrets, public URLs).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from .config import WorkerConfig
from .env import Env, find_secrets, missing_secrets
from .errors import StartupRefused
from .worker import import_worker_module


def problems(configs: Iterable[WorkerConfig], environ: Mapping[str, str] | None = None) -> list[str]:
    """Every problem that would stop these workers from starting in production, each named once."""
    found: list[str] = []
    for config in configs:
        secrets = find_secrets(config, environ)
        missing = missing_secrets(config, secrets)
        if missing:
            found.append(f"{config.name}: missing secret(s) {', '.join(missing)}: set them in the process environment")
        check = getattr(import_worker_module(config), "startup_problems", None)
        if check is not None:
            own = check(Env(vars=config.vars, secrets=secrets, bindings={}))
            found.extend(f"{config.name}: {problem}" for problem in own  # a missing secret is named once
                         if not any(problem.startswith(f"{name} is not set") for name in missing))
    return found


def refuse_if_any(found: list[str]) -> None:
    if found:
        raise StartupRefused(f"{len(found)} problem(s) stop the start:\n" + "\n".join(f"  ✘ {line}" for line in found))
