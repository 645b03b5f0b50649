"""Clients tests drive real processes with: plain HTTP (urllib), `wrangler tail` in a
subprocess, the local Stripe server's ledger, and Cloudflare's own wrangler from npm."""
from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import COUNTER_TOML, ROOT

CLOUDFLARE_WRANGLER_MAJOR = "4"


def cloudflare_wrangler() -> Path:
    """Cloudflare's CLI (and its workerd) from npm, installed once into a cache that outlives the
    checkout (`$REST_SHOP_CACHE`, else ~/.cache/rest-shop). RuntimeError when npm is missing."""
    cache = (Path(os.environ.get("REST_SHOP_CACHE", Path.home() / ".cache" / "rest-shop"))
             / f"npm-wrangler-{CLOUDFLARE_WRANGLER_MAJOR}")
    binary = cache / "node_modules" / ".bin" / "wrangler"
    if not binary.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is needed to install Cloudflare's wrangler")
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(cache),
                        f"wrangler@{CLOUDFLARE_WRANGLER_MAJOR}"], check=True, timeout=600, stdout=subprocess.DEVNULL)
    return binary


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return raw.decode("utf-8", "replace")


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """(status, JSON body or text) of one request; an error status is an answer, not an exception."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            return resp.status, _json_or_text(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _json_or_text(exc.read())


def ignore_errors(call: Callable[..., Any], *args: Any) -> None:
    """Make a request whose answer does not matter (its server is being killed under it)."""
    try:
        call(*args)
    except Exception:  # noqa: BLE001 (cut mid-request: the point)
        pass


def ledger(url: str) -> list[dict[str, Any]]:
    """What the local Stripe server (payments.local.stripe_server) charged and refunded."""
    with urllib.request.urlopen(f"{url}/_local/ledger", timeout=10) as resp:
        return json.loads(resp.read())["ledger"]


def serve_counter(state: Path, *flags: str, token_var: str, token: str | None) -> subprocess.Popen[str]:
    """fx-counter under `wrangler serve` (production, JSON logs) with `flags`; `token_var` (an
    operator listener's token) set to `token`, or left out when None."""
    env = {**os.environ, "FX_SECRET": "s" * 40, "SERVICE_AUTH_KEY": "k" * 40, "PYTHONUNBUFFERED": "1"}
    env.pop(token_var, None)
    if token is not None:
        env[token_var] = token
    return subprocess.Popen([sys.executable, "-m", "wrangler", "serve", "-c", str(COUNTER_TOML), "--port", "0",
                             *flags, "--persist-to", str(state / "prod"), "--log-format", "json"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def logged_urls(proc: subprocess.Popen[str], wanted: dict[str, tuple[str, str]], timeout_s: float = 60) -> dict[str, str]:
    """URLs from a production process's JSON log lines: `wanted` maps a name to (event, field)
    (e.g. "worker": ("ready", "url")). Its output is drained afterwards, so it never blocks."""
    urls: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    for line in proc.stdout:
        record = json.loads(line)
        for name, (event, field) in wanted.items():
            if record.get("event") == event:
                urls[name] = record[field]
        if len(urls) == len(wanted) or time.monotonic() > deadline:
            break
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    return urls


class Tail:
    """`wrangler tail` in a subprocess; lines arrive on queues so reads have deadlines."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "wrangler", "tail", *args], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self.out: queue.Queue[str] = queue.Queue()
        self.err: queue.Queue[str] = queue.Queue()
        for stream, q in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=lambda s=stream, q=q: [q.put(line) for line in s], daemon=True).start()

    def wait_connected(self) -> None:
        line = self.err.get(timeout=30)
        assert "Connected to" in line, line

    def next_event(self) -> dict[str, Any]:
        return json.loads(self.out.get(timeout=30))

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
