"""Which code a process runs: `DURABLE_VERSION` when the deploy names it (a git SHA, a release
tag), else a digest of the source it loaded, so two nodes running different code never report
the same version. Shown in /health, on every member of a cluster, and in tail events
(`scriptVersion.id`, as Cloudflare's), which is how a rolling deploy is watched.
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

ENV = "DURABLE_VERSION"
_RUNTIME_ROOT = Path(__file__).resolve().parent


@functools.cache
def _digest(folders: tuple[Path, ...]) -> str:
    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(path.read_bytes())
    return "src-" + digest.hexdigest()[:12]


def code_version(worker_dirs: list[Path] | None = None) -> str:
    """This process's version: the deploy's name for it, or a digest of the runtime's and the
    workers' source."""
    named = os.environ.get(ENV, "").strip()
    if named:
        return named
    return _digest(tuple(sorted({_RUNTIME_ROOT, *(d.resolve() for d in worker_dirs or [])})))
