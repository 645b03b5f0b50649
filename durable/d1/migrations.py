"""`wrangler d1 migrations`: numbered `.sql` files in the database's `migrations_dir`, applied in
order, each once, and recorded in its `migrations_table` as wrangler records them."""
from __future__ import annotations

import re
from pathlib import Path

from .engine import D1File

_NUMBERED = re.compile(r"^(\d+)_.*\.sql$")


def migration_files(folder: Path) -> list[Path]:
    """The folder's migrations, by number (`0001_create_tables.sql`, …)."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if _NUMBERED.match(p.name)), key=lambda p: int(_NUMBERED.match(p.name)[1]))


def create(folder: Path, message: str) -> Path:
    """A new, empty migration numbered after the last one."""
    folder.mkdir(parents=True, exist_ok=True)
    existing = migration_files(folder)
    number = int(_NUMBERED.match(existing[-1].name)[1]) + 1 if existing else 1  # type: ignore[index]
    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_") or "migration"
    path = folder / f"{number:04d}_{slug}.sql"
    path.write_text(f"-- Migration number: {number:04d} \t {slug}\n")
    return path


async def _table(file: D1File, table: str) -> None:
    await file.script(f'CREATE TABLE IF NOT EXISTS "{table}" (id INTEGER PRIMARY KEY AUTOINCREMENT, '
                      "name TEXT UNIQUE, applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL);")


async def unapplied(file: D1File, folder: Path, table: str) -> list[Path]:
    await _table(file, table)
    done = {row[0] for row in (await file.run([(f'SELECT name FROM "{table}"', ())]))[0].rows}
    return [path for path in migration_files(folder) if path.name not in done]


async def apply(file: D1File, folder: Path, table: str) -> list[Path]:
    """Apply what is not applied yet, in order, each in one transaction with its record."""
    applied: list[Path] = []
    for path in await unapplied(file, folder, table):
        await file.migrate(path.read_text(), table, path.name)
        applied.append(path)
    return applied
