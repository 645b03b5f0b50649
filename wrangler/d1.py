"""`wrangler d1 execute|migrations`: the worker's D1 databases on this machine (`--local`), the
same files `wrangler dev` serves (`--persist-to`, default `.wrangler/state`)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from durable import config as wconfig
from durable.config import ConfigError, D1DatabaseBinding, WorkerConfig
from durable.d1 import D1Database, D1Error
from durable.d1 import migrations as d1_migrations
from durable.d1.engine import D1Failure, D1File, database_file, split_statements

from .dev import state_dir


def add_d1_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    d1 = sub.add_parser("d1", help="query and migrate the worker's D1 databases (local)")
    commands = d1.add_subparsers(dest="d1_command", required=True)
    execute = commands.add_parser("execute", help="run SQL against a database")
    _common(execute)
    execute.add_argument("--command", dest="sql", help="the SQL to run")
    execute.add_argument("--file", type=Path, help="a .sql file to run")
    execute.add_argument("--json", action="store_true", help="print the results as JSON")
    migrations = commands.add_parser("migrations", help="create, list and apply migrations")
    actions = migrations.add_subparsers(dest="migrations_command", required=True)
    create = actions.add_parser("create", help="a new, empty migration file")
    _common(create)
    create.add_argument("message", help="what the migration does (its file name)")
    for name, text in (("list", "migrations not applied yet"), ("apply", "apply what is not applied yet")):
        _common(actions.add_parser(name, help=text))


def _common(command: argparse.ArgumentParser) -> None:
    command.add_argument("database", help="the database's name (or its binding)")
    command.add_argument("-c", "--config", type=Path, default=None, help="the worker's wrangler config")
    command.add_argument("-e", "--env", default=None, help="the environment of the config")
    command.add_argument("--persist-to", type=Path, default=None, help="the state directory (default .wrangler/state)")
    command.add_argument("--local", action="store_true", help="the local database (the only kind here; the default)")
    command.add_argument("--remote", action="store_true", help=argparse.SUPPRESS)
    command.add_argument("--preview", action="store_true", help=argparse.SUPPRESS)


async def run_d1(args: argparse.Namespace) -> int:
    if args.remote:
        raise ConfigError("--remote", args.database, "this runtime has no remote D1: its databases are local "
                          "(--local, the default)")
    config = wconfig.load(args.config or wconfig.config_in(Path.cwd()) or Path("wrangler.toml"), args.env, strict=False)
    binding = _database(config, args.database)
    file = D1File(database_file(state_dir(args), binding.key))
    try:
        if args.d1_command == "execute":
            return await _execute(args, file, binding)
        return await _migrations(args, config, file, binding)
    finally:
        file.close()


def _database(config: WorkerConfig, wanted: str) -> D1DatabaseBinding:
    for binding in config.d1_databases:
        if wanted in (binding.database_name, binding.binding, binding.database_id):
            return binding
    known = ", ".join(b.database_name for b in config.d1_databases) or "none"
    raise ConfigError(config.path, "d1_databases", f"no D1 database {wanted!r} in {config.name}'s config "
                      f"(databases: {known})")


async def _execute(args: argparse.Namespace, file: D1File, binding: D1DatabaseBinding) -> int:
    if (args.sql is None) == (args.file is None):
        raise ConfigError("d1 execute", args.database, "give exactly one of --command SQL and --file PATH")
    sql = args.sql if args.sql is not None else args.file.read_text()
    database = D1Database(file, binding.database_name)
    try:
        if args.file is not None:  # a file runs as one batch: all of it, or none of it
            results = list(await database.batch([database.prepare(s) for s in split_statements(sql)]))
        else:
            results = [await database.prepare(s).all() for s in split_statements(sql)]
    except D1Error as exc:
        print(f"✘ [ERROR] {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([{"results": list(r["results"]), "success": True, "meta": dict(r["meta"])} for r in results],
                         default=str, indent=2))
        return 0
    print(f"🌀 Executed {len(results)} command(s) on {binding.database_name} (local)", file=sys.stderr)
    for result in results:
        for row in result["results"]:
            print(json.dumps(dict(row), default=str))
    return 0


async def _migrations(args: argparse.Namespace, config: WorkerConfig, file: D1File,
                      binding: D1DatabaseBinding) -> int:
    folder = config.directory / binding.migrations_dir
    if args.migrations_command == "create":
        path = d1_migrations.create(folder, args.message)
        print(f"✅ Created {path.relative_to(config.directory)}")
        return 0
    if args.migrations_command == "list":
        pending = await d1_migrations.unapplied(file, folder, binding.migrations_table)
        print("\n".join(p.name for p in pending) if pending else "✅ No migrations to apply!")
        return 0
    try:
        applied = await d1_migrations.apply(file, folder, binding.migrations_table)
    except (D1Error, D1Failure) as exc:
        print(f"✘ [ERROR] {exc}", file=sys.stderr)
        return 1
    for path in applied:
        print(f"✅ {path.name}")
    if not applied:
        print("✅ No migrations to apply!")
    return 0
