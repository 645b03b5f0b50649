"""This tree against a baseline commit of its own history, on the same box in the same run.

- `get_product_by_id`: base `GET /products/:id` (wrk, 32 connections), alternating rounds.
- `mixed_load`: a shop's mix through the gateway for MIXED_S seconds on each side (catalogue
  pages, products, orders placed, the buyer's orders), in alternating rounds.

The baseline runs from a git worktree of BASELINE_COMMIT with the same virtualenv; without that
commit (a shallow clone) the benchmark says so and is skipped.
"""
from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .base_bench import DevSession, _post
from .gateway_bench import UNLIMITED
from .server_bench import rounds, wrk

ROOT = Path(__file__).resolve().parent.parent
BASELINE_COMMIT = "50a792a"  # the last commit on hypercorn and asyncio's loop (before issue 29)
MIXED_S = 120
WORKERS = ("gateway", "base", "payments")


@contextmanager
def worktree(commit: str) -> Iterator[Path | str]:
    """A checkout of `commit` in a temporary folder, or why there is none."""
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp) / "baseline"
        added = subprocess.run(["git", "worktree", "add", "--detach", str(where), commit], cwd=ROOT, check=False,
                               capture_output=True, text=True)
        if added.returncode != 0:
            yield f"no worktree of {commit}: {added.stderr.strip()[-300:]}"
            return
        try:
            yield where
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(where)], cwd=ROOT, check=False,
                           capture_output=True)


def mix_script(folder: Path, tokens: list[str], products: list[str]) -> Path:
    """wrk's Lua for the mix: 5 in 10 a catalogue page, 3 a product, 1 an order, 1 the buyer's orders."""
    script = folder / "mix.lua"
    script.write_text(f"""
local tokens = {json.dumps(tokens).replace("[", "{").replace("]", "}")}
local products = {json.dumps(products).replace("[", "{").replace("]", "}")}
local n = 0
request = function()
  n = n + 1
  local token = tokens[n % #tokens + 1]
  local product = products[n % #products + 1]
  local r = n % 10
  if r < 5 then return wrk.format("GET", "/api/products?limit=20&page=" .. (n % 3 + 1)) end
  if r < 8 then return wrk.format("GET", "/api/products/" .. product) end
  local auth = {{["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}}
  if r < 9 then
    return wrk.format("POST", "/api/orders", auth, '{{"productId": "' .. product .. '", "quantity": 1}}')
  end
  return wrk.format("GET", "/api/orders?limit=5", auth)
end
""")
    return script


def _prepare(dev: DevSession, folder: Path) -> tuple[str, str, Path]:
    """Products and buyers in a session: its base URL, one product's path, and its mix script."""
    base = dev.urls["rest-shop-api"]
    admin = dev.token("admin")
    products = [_post(base + "/products", {"name": f"Mixed {i}", "price": 4.5, "stock": 10**9}, admin)["_id"]
                for i in range(40)]
    return base, f"/products/{products[0]}", mix_script(folder, [dev.token("user") for _ in range(50)], products)


async def bench_baseline(quick: bool) -> dict[str, Any]:
    n, seconds, mixed_rounds = (1, 2.0, 1) if quick else (3, 5.0, 4)
    with worktree(BASELINE_COMMIT) as baseline_root, tempfile.TemporaryDirectory() as tmp:
        if isinstance(baseline_root, str):
            return {"skipped": baseline_root}
        sessions = {"today": DevSession(Path(tmp) / "today", WORKERS, {"RATE_LIMITS": UNLIMITED}),
                    "baseline": DevSession(Path(tmp) / "baseline", WORKERS, {"RATE_LIMITS": UNLIMITED},
                                           root=baseline_root)}
        try:
            prepared = {name: _prepare(dev, Path(tmp) / name) for name, dev in sessions.items()}
            by_id = await rounds({name: (lambda s, p=p: wrk(p[0] + p[1], s)) for name, p in prepared.items()},
                                 n, seconds)
            per_round = (10.0 if quick else MIXED_S) / mixed_rounds
            mixed = await rounds({name: (lambda s, p=p, d=sessions[name]: wrk(d.urls["rest-shop-gateway"], s,
                                                                             script=p[2]))
                                  for name, p in prepared.items()}, mixed_rounds, per_round)
        finally:
            for dev in sessions.values():
                dev.stop()
    return {"baseline_commit": BASELINE_COMMIT,
            "get_product_by_id": {**by_id, "ratio": round(by_id["today"]["rps"] / by_id["baseline"]["rps"], 2),
                                  "target": 1.8},
            "mixed_load": {**mixed, "seconds_each": per_round * mixed_rounds,
                           "ratio": round(mixed["today"]["rps"] / mixed["baseline"]["rps"], 2), "target": 1.5,
                           "p99_no_worse": mixed["today"]["p99_ms"] <= mixed["baseline"]["p99_ms"]}}
