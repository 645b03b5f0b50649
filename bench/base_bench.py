"""Base service over HTTP: catalogue reads vs a bare Quart hello-world, and order creation.

Servers run in a real `wrangler dev` subprocess (with its embedded MongoDB); the load comes
from this process, so client and server each have a core.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import urllib.request
import json
from pathlib import Path
from typing import Any

from tests.accounts import base_database, mint_token

from . import load

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-jwt-key-" + "k" * 40


class DevSession:
    def __init__(self, state: Path, workers: tuple[str, ...] = ("base", "bench/workers/hello"),
                 variables: dict[str, str] | None = None, environ: dict[str, str] | None = None,
                 root: Path = ROOT) -> None:
        """`root`: the tree whose `wrangler` and workers run (another commit's worktree, for a baseline)."""
        self.state, self._db = state, None
        env = {**os.environ, "JWT_KEY": KEY, "PYTHONUNBUFFERED": "1", "WRANGLER_REGISTRY_PATH": str(state / "reg"),
               **(environ or {})}
        for name in ("MONGODB_URI", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"):
            env.pop(name, None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wrangler", "dev", *[a for w in workers for a in ("-c", str(root / w / "wrangler.toml"))],
             "--port", "0",
             "--persist-to", str(state), "--var", "SIGNUP_RATE_LIMIT:1000000/60",
             "--var", "LOGIN_RATE_LIMIT:1000000/60", "--var", "MAX_UNPAID_ORDERS:1000000000",
             "--var", "MAX_UNPAID_UNITS:1000000000",
             *[a for k, v in (variables or {}).items() for a in ("--var", f"{k}:{v}")]],
            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.urls: dict[str, str] = {}
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if m := re.match(r"^\s+(\S+)\s+(http://\S+)", line):
                self.urls[m.group(1)] = m.group(2)
            if "Ready on" in line:
                break
        if "rest-shop-api" not in self.urls:
            self.proc.kill()
            raise RuntimeError("wrangler dev did not start")

    def token(self, role: str = "user") -> str:
        """A token of a new real account in this session's embedded database (as login issues them)."""
        if self._db is None:
            self._db = base_database((self.state / "mongo" / "uri").read_text().strip())
        return mint_token(self._db, KEY, role)

    def opcounters(self, since: dict[str, int] | None = None, per: int = 1) -> dict[str, Any]:
        """The embedded server's command counters (serverStatus), or what changed since `since`, per op."""
        if self._db is None:
            self._db = base_database((self.state / "mongo" / "uri").read_text().strip())
        now = {k: int(v) for k, v in self._db.client.admin.command("serverStatus")["opcounters"].items()}
        if since is None:
            return now
        delta = {k: round((now[k] - since.get(k, 0)) / per, 2) for k in ("insert", "query", "update", "delete")}
        return {**delta, "total": round(sum(delta.values()), 2)}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _post(url: str, body: Any, token: str) -> Any:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


async def bench_base(quick: bool) -> dict[str, Any]:
    n = 400 if quick else 4000
    with tempfile.TemporaryDirectory() as tmp:
        dev = DevSession(Path(tmp))
        try:
            base, hello = dev.urls["rest-shop-api"], dev.urls["bench-hello"]
            admin = dev.token("admin")
            users = [dev.token("user") for i in range(50)]
            products = [_post(base + "/products", {"name": f"Bench item {i}", "price": 9.99, "stock": 10**9,
                                                   "category": "bench"}, admin)["_id"] for i in range(50)]
            for i in range(30):
                _post(base + "/products", {"name": f"Filler {i}", "price": i, "stock": 1}, admin)
            get = lambda path: (lambda i: ("GET", path, None, {}))  # noqa: E731
            baseline = await load.run(hello, get("/hello"), requests=n, concurrency=32)
            by_id = await load.run(base, get(f"/products/{products[0]}"), requests=n, concurrency=32)
            listing = await load.run(base, get("/products?limit=20"), requests=n, concurrency=32)

            def order_for(pick: Any) -> Any:
                return lambda i: ("POST", "/orders", {"productId": pick(i), "quantity": 1},
                                  {"Authorization": f"Bearer {users[i % 50]}"})
            orders_hot = await load.run(base, order_for(lambda i: products[0]), requests=n // 4, concurrency=50)
            orders_many = await load.run(base, order_for(lambda i: products[i % 50]), requests=n // 4, concurrency=50)
        finally:
            dev.stop()
    return {
        "hello_world_baseline": baseline,
        "get_product_by_id": {**by_id, "ratio_to_hello": round(by_id["rps"] / baseline["rps"], 2), "target": 0.5},
        "list_products": {**listing, "ratio_to_hello": round(listing["rps"] / baseline["rps"], 2), "target": 0.5},
        "post_orders_one_hot_product": {**orders_hot, "ratio_to_hello": round(orders_hot["rps"] / baseline["rps"], 3)},
        "post_orders_50_products": {**orders_many, "ratio_to_hello": round(orders_many["rps"] / baseline["rps"], 3)},
    }
