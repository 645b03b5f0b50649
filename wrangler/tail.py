"""`wrangler tail`: attach to a running dev session (found in the dev registry) or, with `--url`, to
any tail API (a production node's, with `CLOUDFLARE_API_TOKEN`), and print its events."""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from durable import config as wconfig
from durable.dev.registry import lookup_all, running
from durable.observe.tail import cli_filters_to_api

ACCOUNT = "local"


def _worker_name(args: argparse.Namespace) -> str | None:
    if args.worker:
        return args.worker
    path = args.config or Path("wrangler.toml")
    if path.is_file():
        return wconfig.load(path, strict=False).name
    return None


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%m/%d/%Y, %I:%M:%S %p")


def pretty(event: dict[str, Any]) -> str:
    """One event the way wrangler prints it: a headline, then its logs and exceptions."""
    outcome = {"ok": "Ok", "canceled": "Canceled", "exception": "Exception Thrown"}.get(
        event.get("outcome", ""), str(event.get("outcome")))
    info = event.get("event") or {}
    if "request" in info:
        request = info["request"]
        status = (info.get("response") or {}).get("status")
        head = f"{request.get('method')} {request.get('url')} - {outcome}" + (f" ({status})" if status else "")
    elif "scheduledTime" in info:
        head = f"Alarm @ {info['scheduledTime']} - {outcome}"
    elif "rpc" in info:
        head = f"{info['rpc'].get('class')}.{info['rpc'].get('method')}() - {outcome}"
    else:
        head = f"Event - {outcome}"
    request_id = f" [{event['requestId']}]" if event.get("requestId") else ""
    lines = [f"{head} @ {_when(event.get('eventTimestamp', 0))}{request_id}"]
    for log in event.get("logs", []):
        lines.append(f"  ({log.get('level')}) " + " ".join(str(m) for m in log.get("message", [])))
    for exc in event.get("exceptions", []):
        lines.append(f"  ✘ {exc.get('name')}: {exc.get('message')}")
    return "\n".join(lines)


async def run_tail(args: argparse.Namespace) -> int:
    name = _worker_name(args)
    if name is None:
        names = ", ".join(e.name for e in running()) or "none"
        print(f"✘ [ERROR] Name the worker to tail (running: {names})", file=sys.stderr)
        return 1
    tail_url = args.url
    if tail_url is None:
        entries = lookup_all(name)
        if not entries:
            names = ", ".join(sorted({e.name for e in running()})) or "none"
            print(f"✘ [ERROR] No running `wrangler dev` session serves {name!r} (running workers: {names}). "
                  f"Start one with `wrangler dev`, or pass --url.", file=sys.stderr)
            return 1
        if len(entries) > 1:
            listed = "".join(f"\n  --url {e.tail_url}   (pid {e.pid}, worker at {e.url}, state in {e.persist_to})"
                             for e in entries)
            print(f"✘ [ERROR] {len(entries)} running sessions serve {name!r}; pick one:{listed}", file=sys.stderr)
            return 1
        tail_url = entries[0].tail_url
    filters = cli_filters_to_api(args.status, args.method, args.header, args.search, args.sampling_rate, args.ip)
    fmt = args.format or ("pretty" if sys.stdout.isatty() else "json")
    base = f"{tail_url.rstrip('/')}/accounts/{ACCOUNT}/workers/scripts/{name}/tails"
    token = os.environ.get("CLOUDFLARE_API_TOKEN")  # as Cloudflare's CLI: a production tail API demands it
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(headers=headers) as session:
        try:
            async with session.post(base, json=filters) as resp:
                body = await resp.json(content_type=None)
        except aiohttp.ClientError as exc:
            print(f"✘ [ERROR] Cannot reach the dev session at {tail_url}: {exc}", file=sys.stderr)
            return 1
        if not body.get("success"):
            message = "; ".join(e.get("message", "") for e in body.get("errors", [])) or f"HTTP {resp.status}"
            print(f"✘ [ERROR] Could not start a tail of {name}: {message}", file=sys.stderr)
            return 1
        tail = body["result"]
        try:
            async with session.ws_connect(tail["url"], protocols=("trace-v1",), heartbeat=30) as ws:
                await ws.send_json({"debug": False})
                print(f"Connected to {name}, waiting for logs...", file=sys.stderr, flush=True)
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break
                    event = json.loads(message.data)
                    print(pretty(event) if fmt == "pretty" else json.dumps(event), flush=True)
        finally:
            try:
                async with session.delete(f"{base}/{tail['id']}"):
                    pass
            except aiohttp.ClientError:
                pass
    return 0
