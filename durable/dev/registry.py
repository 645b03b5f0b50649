"""The dev registry: how separately started `wrangler dev` sessions and `wrangler tail` find workers.

One JSON file per running worker and process in the user's config directory (as wrangler's dev
registry), written 0600 because it carries the session's internal key. Two sessions serving the
same worker each keep their own entry; entries of dead processes are ignored and removed.
"""
from __future__ import annotations

import glob
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


def process_alive(pid: int) -> bool:
    """Is a process with this pid running (entries and records of dead sessions are stale)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _path(name: str, pid: int) -> Path:
    """One file per (worker, process): concurrent sessions serving one name never overwrite each other."""
    return registry_dir() / f"{name}@{pid}.json"


def register(entry: RegistryEntry) -> Path:
    directory = registry_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = _path(entry.name, entry.pid)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(entry), fh)
    tmp.replace(path)
    return path


def unregister(name: str, pid: int) -> None:
    """Remove this process's entry for `name` (and never another session's)."""
    try:
        _path(name, pid).unlink()
    except FileNotFoundError:
        pass


def _read(path: Path) -> RegistryEntry | None:
    try:
        entry = RegistryEntry(**json.loads(path.read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None
    if not process_alive(entry.pid):
        path.unlink(missing_ok=True)
        return None
    return entry


def lookup_all(name: str) -> list[RegistryEntry]:
    """Every live session serving `name`, the most recently started first."""
    directory = registry_dir()
    if not directory.is_dir():
        return []
    paths = sorted(directory.glob(f"{glob.escape(name)}@*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    return [e for e in (_read(p) for p in paths) if e is not None and e.name == name]


def lookup(name: str) -> RegistryEntry | None:
    """The live session serving `name` (the most recent, if several do)."""
    entries = lookup_all(name)
    return entries[0] if entries else None


def running() -> list[RegistryEntry]:
    directory = registry_dir()
    if not directory.is_dir():
        return []
    entries = [_read(p) for p in sorted(directory.glob("*@*.json"))]
    return [e for e in entries if e is not None]
