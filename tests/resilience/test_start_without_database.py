"""Start in any weather: a shop started while its database is down serves at once, its probes
answer within 1 s (readiness 503 saying what is missing, liveness 200), requests that need the
database are 503 `database_unavailable` with `Retry-After`, and once a database comes up at that
address the shop takes an order without anything being restarted. Tried as an operator meets it,
with `wrangler serve --env production` and with `wrangler dev` pointed at an external database."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from pymongo import MongoClient

from tests.accounts import mint_token
from tests.conftest import ROOT, DevProcess, stop_gracefully
from tests.net import free_port
from tests.polling import recovers
from wrangler.embedded_mongo import EmbeddedMongo

pytestmark = pytest.mark.slow
JWT = "j" * 48
SERVICE = "s" * 48
PROBE_S = 1.0  # every probe answers within this, database or not


def get(url: str, timeout: float = PROBE_S, **kw: Any) -> tuple[int, Any]:
    request = urllib.request.Request(url, **kw)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, dict(json.loads(resp.read() or b"null") or {}, _headers=resp.headers)  # case-insensitive, as HTTP names are
    except urllib.error.HTTPError as exc:
        return exc.code, dict(json.loads(exc.read() or b"null") or {}, _headers=exc.headers)


def post(url: str, body: Any, token: str) -> tuple[int, Any]:
    return get(url, timeout=30, data=json.dumps(body).encode(), method="POST",
               headers={"content-type": "application/json", "Authorization": f"Bearer {token}"})




def probes_answer_at_once(urls: dict[str, str], ready_anyway: frozenset[str] = frozenset()) -> None:
    """Every probe answers within PROBE_S: 503 for what depends on the database, 200 for what
    does not (`ready_anyway`)."""
    for name, url in urls.items():
        started = time.monotonic()
        status, body = get(f"{url}/health")
        if name in ready_anyway:
            assert status == 200 and body["status"] == "ok", (name, status, body)
        else:
            assert status == 503 and body["status"] in ("degraded", "down"), (name, status, body)
        assert time.monotonic() - started < PROBE_S
        assert get(f"{url}/health/live")[0] == 200, name


def buy_once_the_database_is_up(mongo: EmbeddedMongo, gateway: str, db_name: str) -> None:
    mongo.start_sync()  # the same address the shop was given
    recovers(lambda: get(f"{gateway}/health", timeout=5)[0] == 200)
    db = MongoClient(mongo.uri)[db_name]
    admin, buyer = mint_token(db, JWT, "admin"), mint_token(db, JWT, "user", str(ObjectId()))
    status, product = post(f"{gateway}/api/products", {"name": "Kettle", "price": 20, "stock": 3}, admin)
    assert status == 201, product
    status, order = post(f"{gateway}/api/orders", {"productId": product["_id"], "quantity": 1}, buyer)
    assert status == 201, order


@pytest.mark.parametrize("mode", [[], ["--cluster", "--lease", "3"]], ids=["one host", "cluster node"])
def test_production_serves_its_probes_with_the_database_down_and_recovers_by_itself(tmp_path: Path,
                                                                                   mode: list[str]) -> None:
    """The reproduction: base's and payments' own ports accepted connections and answered nothing
    for over a minute (start-up waited on the database), the gateway's /health took 2 s. A cluster
    node could not start at all: it is no member until the database answers, but it serves."""
    mongo = EmbeddedMongo(tmp_path / "mongo")  # its address, not started
    db_name = f"t_{ObjectId()}"
    port = free_port()  # (base and payments take their [dev] ports, or any free one)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "MONGODB_"))},
           "MONGODB_URI": mongo.uri, "JWT_KEY": JWT, "SERVICE_AUTH_KEY": SERVICE, "SMTP_URL": "smtp://127.0.0.1:25",
           "STRIPE_SECRET_KEY": "sk_test_" + "k" * 24, "STRIPE_WEBHOOK_SECRET": "whsec_" + "w" * 32,
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "wrangler", "serve", "--env", "production", *mode, "--port", str(port),
         "--persist-to", str(tmp_path / "state"), "--grace", "2",
         "--var", f"MONGODB_DB:{db_name}", "--var", "MONGODB_TIMEOUT_MS:1000",
         "--var", "PUBLIC_BASE_URL:https://shop.example", "--var", "MAIL_FROM:Shop <shop@shop.example>",
         "--var", "PAYMENT_PROVIDERS:stripe", "--var", "STRIPE_API_BASE:http://127.0.0.1:9",
         "--var", "RATE_LIMITS:base.read=100000/60,base.write=100000/60,payments.read=100000/60,"
                  "payments.write=100000/60,images.read=100000/60"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    lines: list[dict[str, Any]] = []
    threading.Thread(target=lambda: [lines.append(json.loads(l)) for l in proc.stdout if l.startswith("{")],
                     daemon=True).start()
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    try:
        ready = recovers(lambda: {l["worker"]: l["url"] for l in list(lines) if l.get("event") == "ready"}
                      if sum(l.get("event") == "ready" for l in list(lines)) == 4 else None, timeout_s=60)
        # on one host the image bucket is on disk: its service needs no database
        probes_answer_at_once(ready, frozenset() if mode else frozenset({"rest-shop-images"}))
        gateway = ready["rest-shop-gateway"]
        status, body = get(f"{gateway}/api/products", timeout=10)
        # (a cluster node's objects live in that database too: until it joins they are what is away)
        away = {"database_unavailable"} | ({"object_unavailable"} if mode else set())
        assert status == 503 and body["error"]["code"] in away and body["_headers"]["Retry-After"], body
        if mode:
            assert get(f"{ready['rest-shop-api']}/health")[1]["node"]["member"] is False
        buy_once_the_database_is_up(mongo, gateway, db_name)
    finally:
        stop_gracefully(proc)
        mongo.stop()


def test_dev_with_an_external_database_that_is_down_listens_at_once(tmp_path: Path) -> None:
    """The reproduction: `wrangler dev` with an external MONGODB_URI that was down did not listen
    for 50 s and more (each worker tried the database in turn before serving)."""
    mongo = EmbeddedMongo(tmp_path / "mongo")
    db_name = f"t_{ObjectId()}"
    env = {**os.environ, "MONGODB_URI": mongo.uri, "JWT_KEY": JWT, "PYTHONUNBUFFERED": "1",
           "WRANGLER_REGISTRY_PATH": str(tmp_path / "registry")}
    started = time.monotonic()
    dev = DevProcess(["--port", "0", "--persist-to", str(tmp_path / "state"), "--var", f"MONGODB_DB:{db_name}",
                      "--var", "MONGODB_TIMEOUT_MS:1000"], ROOT, env)
    try:
        assert time.monotonic() - started < 30  # (it starts the local providers and mail catcher too)
        urls = {name: url for name, url in dev.urls.items() if name.startswith("rest-shop")}
        assert set(urls) == {"rest-shop-api", "rest-shop-payments", "rest-shop-gateway", "rest-shop-images"}, dev.urls
        probes_answer_at_once(urls, frozenset({"rest-shop-images"}))
        buy_once_the_database_is_up(mongo, urls["rest-shop-gateway"], db_name)
    finally:
        dev.stop()
        mongo.stop()
