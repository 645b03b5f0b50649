"""`wrangler secret put|list|delete NAME`: local secrets in the worker's `.dev.vars` (never printed)."""
from __future__ import annotations

import argparse
import getpass
import os
import sys

from dotenv import dotenv_values, set_key, unset_key

from durable import config as wconfig


def run_secret(args: argparse.Namespace) -> int:
    config = wconfig.load(args.config, strict=False)
    path = config.directory / ".dev.vars"
    if args.action == "list":
        names = list(dotenv_values(path)) if path.is_file() else []
        for name in names:
            print(name)
        return 0
    if not args.name:
        print(f"✘ [ERROR] wrangler secret {args.action} needs a NAME", file=sys.stderr)
        return 1
    if args.action == "delete":
        if path.is_file():
            unset_key(path, args.name)
        print(f"Deleted {args.name} from {path}", file=sys.stderr)
        return 0
    value = getpass.getpass(f"Value for {args.name}: ") if sys.stdin.isatty() else sys.stdin.read().rstrip("\n")
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    set_key(path, args.name, value, quote_mode="always")
    print(f"Saved {args.name} to {path} (restart wrangler dev to use it)", file=sys.stderr)
    return 0
