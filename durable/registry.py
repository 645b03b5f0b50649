"""The dev registry: how separately started `wrangler dev` sessions and `wrangler tail` find workers.

One JSON file per running worker in the user's config directory (as wrangler's dev registry),
written 0600 because it carries the session's internal key. Entries of dead processes are
ignored and removed.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path


def registry_dir() -> Path:
    explicit = os.environ.get("WRANGLER_REGISTRY_PATH")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "durable-wrangler" / "registry"


@dataclass
class RegistryEntry:
    name: str
    url: str               # the worker's own HTTP address
    tail_url: str          # base URL of the tail API serving this worker
    pid: int
    internal_key: str      # authenticates runtime-internal calls (Durable Object RPC)
    durable_objects: list[str] = field(default_factory=list)
    persist_to: str = ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def register(entry: RegistryEntry) -> Path:
    directory = registry_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{entry.name}.json"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(entry), fh)
    tmp.replace(path)
    return path


def unregister(name: str, pid: int | None = None) -> None:
    path = registry_dir() / f"{name}.json"
    try:
        if pid is not None and json.loads(path.read_text()).get("pid") != pid:
            return  # someone else registered this name since
        path.unlink()
    except (FileNotFoundError, ValueError):
        pass


def lookup(name: str) -> RegistryEntry | None:
    path = registry_dir() / f"{name}.json"
    try:
        entry = RegistryEntry(**json.loads(path.read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None
    if not _alive(entry.pid):
        unregister(name, entry.pid)
        return None
    return entry


def running() -> list[RegistryEntry]:
    directory = registry_dir()
    if not directory.is_dir():
        return []
    entries = [lookup(p.stem) for p in sorted(directory.glob("*.json"))]
    return [e for e in entries if e is not None]
