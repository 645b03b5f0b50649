"""`python -m base.admin promote EMAIL`: make an existing user an admin (no open endpoint does this).

Connects with MONGODB_URI, or else to the embedded server of the local `wrangler dev` session.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from pymongo import AsyncMongoClient

from durable import config as wconfig

from .stores.users import UserStore

HERE = Path(__file__).resolve().parent


def _uri(state: Path) -> str | None:
    if os.environ.get("MONGODB_URI"):
        return os.environ["MONGODB_URI"]
    uri_file = state / "mongo" / "uri"
    return uri_file.read_text().strip() if uri_file.is_file() else None


async def promote(email: str, state: Path) -> int:
    uri = _uri(state)
    if uri is None:
        print("✘ set MONGODB_URI, or run `make dev` first (its embedded database is found automatically)",
              file=sys.stderr)
        return 1
    db_name = wconfig.load(HERE / "wrangler.toml").vars["MONGODB_DB"]
    client: AsyncMongoClient = AsyncMongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        if not await UserStore(client[db_name]).set_role(email, "admin"):
            print(f"✘ no user {email}: sign up first (POST /user/signup)", file=sys.stderr)
            return 1
    finally:
        await client.close()
    print(f"{email} is now an admin (log in again for a token with the admin role)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m base.admin")
    parser.add_argument("action", choices=["promote"])
    parser.add_argument("email")
    parser.add_argument("--persist-to", type=Path, default=Path(".wrangler/state"))
    args = parser.parse_args()
    return asyncio.run(promote(args.email, args.persist_to))


if __name__ == "__main__":
    raise SystemExit(main())
