"""A worker's `[[migrations]]` applied to its stored objects: a rename moves a class's data to the
new name, a delete drops it. Applied tags are recorded per script, so each runs once."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from ..config import ConfigError, WorkerConfig

log = logging.getLogger("durable.migrations")


def class_dir(root: Path, script: str, class_name: str) -> Path:
    """Where one class's objects live on this host: `<state>/v3/do/<script>-<Class>/`."""
    return root / f"{script}-{class_name}"


def apply_migrations(config: WorkerConfig, root: Path) -> list[str]:
    """Run the migrations not yet applied to the state under `root`; returns their tags."""
    record = root / f".migrations-{config.name}.json"
    done = set(json.loads(record.read_text())) if record.exists() else set()
    applied: list[str] = []
    for i, migration in enumerate(config.migrations):
        if migration.tag in done:
            continue
        for rename in migration.renamed_classes:
            old = class_dir(root, config.name, rename["from"])
            new = class_dir(root, config.name, rename["to"])
            if not old.exists():
                continue
            if new.exists():
                raise ConfigError(config.path, f"migrations[{i}].renamed_classes",
                                  f"cannot rename {rename['from']!r} to {rename['to']!r}: {new} already holds data")
            old.rename(new)
            log.info("%s: moved the objects of %s to %s (migration %s)", config.name, rename["from"],
                     rename["to"], migration.tag)
        later = config.migrations[i + 1:]
        for cls in migration.deleted_classes:
            recreated = any(cls in m.new_sqlite_classes + m.new_classes or any(r["to"] == cls for r in m.renamed_classes)
                            for m in later)
            target = class_dir(root, config.name, cls)
            if not recreated and target.exists():
                shutil.rmtree(target)
                log.info("%s: deleted the objects of %s (migration %s)", config.name, cls, migration.tag)
        done.add(migration.tag)
        applied.append(migration.tag)
    if applied:
        root.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(sorted(done)))
    return applied
