"""Logins while `POST /user/password/reset` is flooded with guessed tokens: a guess costs a token
lookup, never an argon2id hash, so logins (which hash once each) keep their latency.

Baseline: the same logins, alone, in the same run. The flood's own rate limit is lifted here
(`PASSWORD_RESET_SUBMIT_LIMIT`), so what is measured is the cost of a guess, not the limiter.
"""
from __future__ import annotations

import asyncio
import json
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from . import load
from .base_bench import DevSession

PASSWORD = "bench password"


def _signup(base: str, email: str) -> None:
    req = urllib.request.Request(base + "/user/signup", data=json.dumps({"email": email, "password": PASSWORD}).encode(),
                                 method="POST", headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        resp.read()


async def bench_accounts(quick: bool) -> dict[str, Any]:
    logins_n, flood_n = (20, 400) if quick else (60, 3000)  # the flood outlasts the logins
    with tempfile.TemporaryDirectory() as tmp:
        dev = DevSession(Path(tmp), workers=("base",), variables={"PASSWORD_RESET_SUBMIT_LIMIT": "1000000/60"})
        try:
            base = dev.urls["rest-shop-api"]
            for i in range(8):
                _signup(base, f"bench{i}@shop.example")

            def login(i: int) -> tuple[str, str, Any, dict[str, str]]:
                return "POST", "/user/login", {"email": f"bench{i % 8}@shop.example", "password": PASSWORD}, {}

            def guess(i: int) -> tuple[str, str, Any, dict[str, str]]:
                return "POST", "/user/password/reset", {"token": f"guessed-{i}", "newPassword": "x" * 12}, {}

            alone = await load.run(base, login, requests=logins_n, concurrency=4)
            flooded, flood = await asyncio.gather(
                load.run(base, login, requests=logins_n, concurrency=4),
                load.run(base, guess, requests=flood_n, concurrency=32, ok=lambda s: s == 400))
        finally:
            dev.stop()
    return {
        "logins_alone": alone,
        "logins_while_reset_is_flooded": {**flooded, "p50_ratio_to_alone": round(flooded["p50_ms"] / alone["p50_ms"], 2),
                                          "target": "≤ 2 (a guess costs no hash)"},
        "reset_flood_of_guessed_tokens": flood,
    }
