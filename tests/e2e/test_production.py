"""`wrangler serve --env production`: refuses weak or missing secrets with a clear message; runs
each worker in its own process with signed HTTP bindings and JSON logs; SIGTERM lets a request
in flight finish, then every process stops cleanly."""
from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import trustme
from bson import ObjectId
from pymongo import MongoClient

from durable.rpc.wire import INTERNAL_PREFIX
from tests.accounts import mint_token
from tests.conftest import BASE_TOML, PAYMENTS_TOML, ROOT, stop_gracefully
from tests.net import free_port

pytestmark = pytest.mark.slow

STRONG_JWT = "j" * 48
STRONG_SERVICE = "s" * 48


_started: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _stop_what_a_test_left_running() -> Any:
    """A failed assertion leaves its `wrangler serve` up (holding ports 8788/8789 for the next test):
    stopped here as an operator would, SIGTERM, then SIGKILL."""
    yield
    while _started:
        stop_gracefully(_started.pop())


def serve(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("STRIPE_", "PAYPAL_", "MPESA_", "GOOGLE_", "MICROSOFT_", "APPLE_"))
             and k not in ("MONGODB_URI", "JWT_KEY", "SERVICE_AUTH_KEY")}
    proc = subprocess.Popen([sys.executable, "-m", "wrangler", "serve", "--env", "production", *args], cwd=ROOT,
                            env={**clean, **env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _started.append(proc)
    return proc


@pytest.mark.parametrize("config, env, names, extra", [
    (BASE_TOML, {"JWT_KEY": STRONG_JWT, "SERVICE_AUTH_KEY": STRONG_SERVICE}, "MONGODB_URI", []),
    (BASE_TOML, {"JWT_KEY": "too-short", "SERVICE_AUTH_KEY": STRONG_SERVICE, "MONGODB_URI": "mongodb://x"},
     "JWT_KEY is shorter than 32 bytes", []),
    (BASE_TOML, {"JWT_KEY": STRONG_JWT, "MONGODB_URI": "mongodb://x"}, "SERVICE_AUTH_KEY", []),
    (BASE_TOML, {"JWT_KEY": STRONG_JWT, "SERVICE_AUTH_KEY": STRONG_SERVICE, "MONGODB_URI": "mongodb://x"},
     "google needs GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET",
     ["--var", "SIGNIN_PROVIDERS:google,apple", "--var", "PUBLIC_BASE_URL:https://shop.example"]),
    (BASE_TOML, {"JWT_KEY": STRONG_JWT, "SERVICE_AUTH_KEY": STRONG_SERVICE, "MONGODB_URI": "mongodb://x",
                 "GOOGLE_CLIENT_ID": "id", "GOOGLE_CLIENT_SECRET": "secret"},
     "PUBLIC_BASE_URL is not set", ["--var", "SIGNIN_PROVIDERS:google"]),
    (BASE_TOML, {"JWT_KEY": STRONG_JWT, "SERVICE_AUTH_KEY": STRONG_SERVICE, "MONGODB_URI": "mongodb://x"},
     "SMTP_URL is not set", ["--var", "PUBLIC_BASE_URL:https://shop.example"]),
    (BASE_TOML, {"JWT_KEY": STRONG_JWT, "SERVICE_AUTH_KEY": STRONG_SERVICE, "MONGODB_URI": "mongodb://x",
                 "SMTP_URL": "smtp://relay.example:587"},
     "MAIL_FROM is not set", ["--var", "PUBLIC_BASE_URL:https://shop.example"]),
    (BASE_TOML, {"JWT_KEY": STRONG_JWT, "SERVICE_AUTH_KEY": STRONG_SERVICE, "MONGODB_URI": "mongodb://x",
                 "SMTP_URL": "smtp://relay.example:587"},
     "ACCOUNT_PAGES_URL 'http://shop.example/account?from=mail' must be an https:// address",
     ["--var", "PUBLIC_BASE_URL:https://shop.example", "--var", "MAIL_FROM:Shop <no-reply@shop.example>",
      "--var", "ACCOUNT_PAGES_URL:http://shop.example/account?from=mail"]),
    (BASE_TOML, {"JWT_KEY": STRONG_JWT, "SERVICE_AUTH_KEY": STRONG_SERVICE, "MONGODB_URI": "mongodb://x",
                 "SMTP_URL": "smtp://relay.example:587"},
     "the internal listener on 0.0.0.0 takes object calls and service-binding forwards",
     ["--cluster", "--ip", "0.0.0.0", "--var", "PUBLIC_BASE_URL:https://shop.example",
      "--var", "MAIL_FROM:Shop <no-reply@shop.example>"]),
    (PAYMENTS_TOML, {"JWT_KEY": STRONG_JWT, "SERVICE_AUTH_KEY": STRONG_SERVICE, "MONGODB_URI": "mongodb://x"},
     "stripe needs STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET", ["--var", "PUBLIC_BASE_URL:https://shop.example"]),
    (PAYMENTS_TOML, {"JWT_KEY": STRONG_JWT, "SERVICE_AUTH_KEY": STRONG_SERVICE, "MONGODB_URI": "mongodb://x"},
     "PUBLIC_BASE_URL is not set", []),
    (PAYMENTS_TOML, {"JWT_KEY": STRONG_JWT, "SERVICE_AUTH_KEY": STRONG_SERVICE, "MONGODB_URI": "mongodb://x"},
     "must be https://", ["--var", "PUBLIC_BASE_URL:http://shop.example"]),
])
def test_production_refuses_missing_or_weak_secrets(tmp_path: Path, config: Path, env: dict[str, str],
                                                    names: str, extra: list[str]) -> None:
    proc = serve("-c", str(config), "--port", "0", "--persist-to", str(tmp_path), *extra, env=env)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "✘ [ERROR]" in err and names in err, err
    assert "Traceback" not in err


def serve_shop(port: int, tmp_path: Path, mongo_uri: str, stripe: tuple[str, str], *args: str,
               db_name: str | None = None, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """The four workers in production against the test's MongoDB and local Stripe server, with
    strong secrets and an SMTP relay named (nothing is mailed); `args` and `env` add to that."""
    stripe_url, stripe_key = stripe
    return serve("--port", str(port), "--persist-to", str(tmp_path), *args,
                 "--var", f"MONGODB_DB:{db_name or f't_{uuid.uuid4().hex[:16]}'}", "--var", "PAYMENT_PROVIDERS:stripe",
                 "--var", f"STRIPE_API_BASE:{stripe_url}", "--var", "PUBLIC_BASE_URL:https://shop.example",
                 "--var", "MAIL_FROM:Shop <no-reply@shop.example>",
                 env={"JWT_KEY": STRONG_JWT, "SERVICE_AUTH_KEY": STRONG_SERVICE, "MONGODB_URI": mongo_uri,
                      "SMTP_URL": "smtp://127.0.0.1:25", "STRIPE_SECRET_KEY": stripe_key,
                      "STRIPE_WEBHOOK_SECRET": "whsec_" + "w" * 32, **(env or {})})




METRICS_TOKEN = "m" * 40


def scrape(url: str, token: str | None = METRICS_TOKEN) -> tuple[int, dict[str, float]]:
    """GET a /metrics URL: the status and, when 200, each series (name{labels} as Prometheus
    prints them, labels sorted) → its value."""
    from prometheus_client.parser import text_string_to_metric_families
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            text = resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            series[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return 200, series


def call(method: str, url: str, body: Any = None, token: str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"content-type": "application/json", **(headers or {}),
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_three_processes_signed_bindings_json_logs_and_graceful_sigterm(tmp_path: Path, mongo_uri: str,
                                                                         stripe_server) -> None:  # noqa: F811
    port = free_port()
    db_name = f"t_{uuid.uuid4().hex[:16]}"
    ca = trustme.CA()  # object calls between the processes: mutual TLS on their internal listeners
    node_cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = _write_pems(tmp_path, ca, node_cert)
    proc = serve_shop(port, tmp_path, mongo_uri, stripe_server, "--grace", "10", "--metrics-port", "0",
                      "--internal-tls-cert", paths["node.pem"], "--internal-tls-key", paths["node.key"],
                      "--internal-tls-ca", paths["ca.pem"], db_name=db_name, env={"METRICS_TOKEN": METRICS_TOKEN})
    lines: list[dict[str, Any]] = []
    errors: list[str] = []
    not_json: list[str] = []  # production stdout is JSON lines only; any other line is named, not lost

    def read_stdout() -> None:
        for line in proc.stdout:
            try:
                lines.append(json.loads(line))
            except ValueError:
                not_json.append(line)
    threading.Thread(target=read_stdout, daemon=True).start()
    threading.Thread(target=lambda: [errors.append(l) for l in proc.stderr], daemon=True).start()
    gateway = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    # both streams: each is read by a thread of its own, so one may be behind the other
    while sum("Ready on" in e for e in errors) < 4 or sum(l.get("event") == "ready" for l in lines) < 4:
        assert proc.poll() is None and time.monotonic() < deadline, (
            "".join(errors), [l for l in lines if l.get("event") == "ready"], not_json)
        time.sleep(0.05)
    assert not not_json, not_json
    ready = {l["worker"]: l["url"] for l in lines if l.get("event") == "ready"}
    internal = {l["worker"]: l["internal_url"] for l in lines if l.get("event") == "ready"}
    assert set(ready) == {"rest-shop-api", "rest-shop-payments", "rest-shop-gateway", "rest-shop-images"}
    assert all(url.startswith("https://127.0.0.1:") for url in internal.values()), internal
    _internal_routes_answer_only_our_nodes(gateway, ready, internal, paths, node_cert)

    assert call("POST", f"{ready['rest-shop-api']}/user/signup", {"email": "d@x.io", "password": "password123"})[0] == 401
    assert call("GET", f"{ready['rest-shop-api']}/health")[0] == 200  # probes need no signature
    db = MongoClient(mongo_uri)[db_name]
    admin = mint_token(db, STRONG_JWT, "admin", str(ObjectId()), "a@x.io")
    user = mint_token(db, STRONG_JWT, "user", str(ObjectId()), "u@x.io")
    status, product = call("POST", f"{gateway}/api/products", {"name": "Mug", "price": 8, "stock": 5}, admin)
    assert status == 201
    status, order = call("POST", f"{gateway}/api/orders", {"productId": product["_id"], "quantity": 2}, user,
                         headers={"X-Request-Id": "prod-req-1"})
    assert status == 201
    order_id = order["createdOrder"]["_id"]
    stranger = mint_token(db, STRONG_JWT, "user", str(ObjectId()), "o@x.io")
    first, refused = asyncio.run(_follow(port, order_id, user, stranger))
    assert first["order"]["_id"] == order_id and first["order"]["status"] == "pending" and refused == 404
    _the_order_was_logged_by_both_workers_over_tls(lines, deadline)
    _each_worker_s_metrics_are_apart_and_guarded(gateway, lines, ready)
    _a_payment_under_way_finishes_through_sigterm(proc, stripe_server[0], gateway, db, order_id, user, deadline)
    stopped = {l["worker"] for l in lines if l.get("event") == "stopped"}
    assert stopped == {"rest-shop-api", "rest-shop-payments", "rest-shop-gateway", "rest-shop-images"}


def _write_pems(tmp_path: Path, ca: Any, node_cert: Any) -> dict[str, str]:
    paths = {}
    for name, blob in (("ca.pem", ca.cert_pem), ("node.pem", node_cert.cert_chain_pems[0]),
                       ("node.key", node_cert.private_key_pem)):
        paths[name] = str(tmp_path / name)
        blob.write_to_path(paths[name])
    return paths


def _internal_routes_answer_only_our_nodes(gateway: str, ready: dict[str, str], internal: dict[str, str],
                                           paths: dict[str, str], node_cert: Any) -> None:
    """The internal routes are on the internal listeners only, and those speak only to our nodes."""
    probe = INTERNAL_PREFIX + "UserSessions/" + "0" * 64 + "/check"
    for worker in ready:
        assert call("POST", f"{ready[worker]}{probe}", {})[0] == 404, worker  # not on the public ports
        assert call("POST", f"{gateway}/api{probe}", {})[0] == 404
    stranger_cert = trustme.CA().issue_cert("127.0.0.1")  # signed by a CA the nodes do not trust
    for cert in (None, stranger_cert):
        context = ssl.create_default_context(cafile=paths["ca.pem"])
        if cert is not None:
            cert.configure_cert(context)
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(urllib.request.Request(internal["rest-shop-api"] + probe, data=b"", method="POST"),
                                   timeout=10, context=context)
    trusted = ssl.create_default_context(cafile=paths["ca.pem"])
    node_cert.configure_cert(trusted)  # a node's certificate, but no signature with the key: still refused
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(internal["rest-shop-api"] + probe, data=b"", method="POST"),
                               timeout=10, context=trusted)
    assert refused.value.code == 401


async def _follow(port: int, order_id: str, user: str, stranger: str) -> tuple[dict[str, Any], int]:
    """Gateway → base in another process: a real WebSocket hop; the first update, and a stranger's refusal."""
    import aiohttp
    live = f"ws://127.0.0.1:{port}/api/orders/{order_id}/live"
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(live, headers={"Authorization": f"Bearer {user}"}) as ws:
            first = await ws.receive_json(timeout=30)
        try:
            await http.ws_connect(live, headers={"Authorization": f"Bearer {stranger}"})
            refused = 0
        except aiohttp.WSServerHandshakeError as exc:
            refused = exc.status
    return first, refused


def _the_order_was_logged_by_both_workers_over_tls(lines: list[dict[str, Any]], deadline: float) -> None:
    def access_lines() -> list[dict[str, Any]]:  # written as each worker finishes the request
        return [l for l in list(lines) if l.get("request_id") == "prod-req-1" and l.get("logger") == "durable.access"]
    while {l["worker"] for l in access_lines()} < {"rest-shop-gateway", "rest-shop-api"}:
        assert time.monotonic() < deadline + 30, access_lines()
        time.sleep(0.02)
    logged = access_lines()
    assert all(isinstance(l["duration_ms"], float) and l["status"] == 201 for l in logged)
    # the gateway's forward (the user's token, the order) reached base on its internal listener, over TLS
    assert [l["scheme"] for l in logged if l["worker"] == "rest-shop-api"] == ["https"], logged


def _each_worker_s_metrics_are_apart_and_guarded(gateway: str, lines: list[dict[str, Any]],
                                                 ready: dict[str, str]) -> None:
    """Each worker's /metrics: on a listener of its own (not the public one), behind METRICS_TOKEN."""
    scrapes = {l["worker"]: l["metrics_url"] for l in lines if l.get("event") == "metrics_ready"}
    assert set(scrapes) == set(ready)
    assert call("GET", f"{gateway}/metrics")[0] == 404  # a worker's own path space: not the runtime's
    assert scrape(scrapes["rest-shop-api"], token=None)[0] == 401
    assert scrape(scrapes["rest-shop-api"], token="not-the-token")[0] == 401
    api = scrape(scrapes["rest-shop-api"])[1]
    assert api['workers_requests_total{method="POST",route="/orders",status="2xx",worker="rest-shop-api"}'] == 1
    edge = scrape(scrapes["rest-shop-gateway"])[1]  # its calls to base crossed processes (HTTP)
    assert edge['workers_service_binding_calls_total{outcome="ok",service="rest-shop-api",'
                'worker="rest-shop-gateway"}'] >= 2


def _a_payment_under_way_finishes_through_sigterm(proc: Any, stripe_url: str, gateway: str, db: Any, order_id: str,
                                                  user: str, deadline: float) -> None:
    """SIGTERM while a payment waits on a slow provider: it still succeeds, and every worker stops cleanly."""
    urllib.request.urlopen(urllib.request.Request(f"{stripe_url}/_local/faults", method="POST",
                                                  data=json.dumps({"delay_s": 2, "count": 1,
                                                                   "path": "/v1/payment_intents"}).encode(),
                                                  headers={"content-type": "application/json"}), timeout=10)
    result: dict[str, Any] = {}

    def pay() -> None:  # over HTTP to payments, whose OrderLock calls go over HTTP to base, signed
        result["reply"] = call("POST", f"{gateway}/api/payments/initiate",
                               {"orderId": order_id, "paymentMethod": "card",
                                "paymentData": {"paymentMethodId": "pm_card_visa"}}, user,
                               headers={"Idempotency-Key": "prod-1"})
    paying = threading.Thread(target=pay)
    paying.start()
    while db["payments"].find_one({"providerCalled": True}) is None:  # now waiting on the (slow) provider
        assert paying.is_alive() and time.monotonic() < deadline + 60
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    paying.join(timeout=30)
    assert result["reply"][0] == 201 and result["reply"][1]["payment"]["status"] == "succeeded"
    assert proc.wait(timeout=30) == 0


def test_production_names_every_problem_at_once(tmp_path: Path) -> None:
    """No secrets at all, a weak key, no public URL, providers without keys, a tail without a token:
    one start names them all, one line each, instead of one per restart."""
    proc = serve("--port", "0", "--persist-to", str(tmp_path), "--tail-port", "0", env={"JWT_KEY": "weak"})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "Traceback" not in err
    lines = [line.strip() for line in err.splitlines() if line.strip().startswith("✘ rest-shop") or "TAIL_TOKEN" in line]
    for expected in ("rest-shop-api: missing secret(s) MONGODB_URI, SERVICE_AUTH_KEY",
                     "rest-shop-api: SMTP_URL is not set",
                     "rest-shop-api: JWT_KEY is shorter than 32 bytes",
                     "rest-shop-gateway: missing secret(s) SERVICE_AUTH_KEY",
                     "rest-shop-payments: PUBLIC_BASE_URL is not set",
                     "rest-shop-payments: payment provider stripe is enabled without its secrets",
                     "rest-shop-payments: payment provider mpesa is enabled without its secrets",
                     "TAIL_TOKEN is missing"):
        assert any(expected in line for line in lines), (expected, err)


RELOADS = int(os.environ.get("RELOADS", "2"))  # RELOADS=20 for the long run (README, Failures)


def _one_connection_per_request(url: str, done: threading.Event, outcomes: list[Any]) -> None:
    while not done.is_set():
        try:
            outcomes.append(call("GET", url, headers={"Cache-Control": "no-cache"})[0])
        except OSError as exc:
            outcomes.append(repr(exc))


def _kept_alive_connection(port: int, path: str, done: threading.Event, outcomes: list[Any]) -> None:
    """http.client opens a new connection only once the server has closed the last one."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not done.is_set():
        try:
            connection.request("GET", path, headers={"Cache-Control": "no-cache"})
            with connection.getresponse() as resp:
                resp.read()
                outcomes.append(resp.status)
        except (OSError, http.client.HTTPException) as exc:
            outcomes.append(repr(exc))
            connection.close()
    connection.close()


def test_sighup_replaces_every_worker_process_and_no_request_fails(tmp_path: Path, mongo_uri: str,
                                                                   stripe_server) -> None:  # noqa: F811
    """A reload in place, RELOADS times: SIGHUP replaces each worker's process, one at a time,
    with one that reads the env file again (here a new DURABLE_VERSION). The supervisor holds the
    listening sockets, so requests made meanwhile wait in their queue instead of being refused; a
    process that leaves answers what it accepted, the last answer on a kept-alive connection says
    `Connection: close`. One client opens a connection per request, one keeps its connection
    alive: neither sees a request fail."""
    port = free_port()
    env_file = tmp_path / "deploy.env"
    env_file.write_text("DURABLE_VERSION=v0\n")
    proc = serve_shop(port, tmp_path, mongo_uri, stripe_server, "--grace", "10", "--env-file", str(env_file),
                      "--var", "RATE_LIMITS:base.read=1000000000/60")  # two clients asking as fast as they can
    lines: list[dict[str, Any]] = []
    errors: list[str] = []
    done = threading.Event()
    threading.Thread(target=lambda: [lines.append(json.loads(l)) for l in proc.stdout], daemon=True).start()
    threading.Thread(target=lambda: [errors.append(l) for l in proc.stderr], daemon=True).start()
    gateway = f"http://127.0.0.1:{port}"
    path = "/api/products?limit=1"
    try:
        deadline = time.monotonic() + 60
        while sum("Ready on" in e for e in errors) < 4:
            assert proc.poll() is None and time.monotonic() < deadline, "".join(errors)
            time.sleep(0.05)

        def version() -> str:
            status, health = call("GET", f"{gateway}/api/health")
            assert status == 200, health
            return health["node"]["version"]

        assert version() == "v0"
        outcomes: dict[str, list[Any]] = {"new connections": [], "kept alive": []}
        clients = [threading.Thread(target=_one_connection_per_request,
                                    args=(gateway + path, done, outcomes["new connections"])),
                   threading.Thread(target=_kept_alive_connection, args=(port, path, done, outcomes["kept alive"]))]
        for client in clients:
            client.start()
        for reload in range(1, RELOADS + 1):
            env_file.write_text(f"DURABLE_VERSION=v{reload}\n")
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 120
            while sum(l.get("event") == "reloaded" for l in lines) < reload:
                assert proc.poll() is None and time.monotonic() < deadline, [l for l in lines if "reload" in str(l)]
                time.sleep(0.1)
            assert version() == f"v{reload}"
        done.set()
        for client in clients:
            client.join(timeout=60)
        assert sum(l.get("event") == "ready" for l in lines) == 4 * (RELOADS + 1)  # four processes each time
        print(f"{RELOADS} reloads:", {kind: len(seen) for kind, seen in outcomes.items()})  # (-s: README, Failures)
        for kind, seen in outcomes.items():
            assert seen and set(seen) == {200}, (kind, len(seen), [o for o in seen if o != 200][:5])
    finally:
        done.set()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def test_a_worker_s_metrics_add_up_over_its_processes_across_a_reload(tmp_path: Path, mongo_uri: str,
                                                                      stripe_server) -> None:  # noqa: F811
    """Old and new process of a reload serve one metrics socket and count into one set of files
    (prometheus_client's multiprocess mode): a scrape after the reload still has what the old
    process counted, and the old one's requests-in-flight gauge is gone with it."""
    port = free_port()
    proc = serve_shop(port, tmp_path, mongo_uri, stripe_server, "--grace", "5", "--metrics-port", "0",
                      env={"METRICS_TOKEN": METRICS_TOKEN})
    lines: list[dict[str, Any]] = []
    threading.Thread(target=lambda: [lines.append(json.loads(l)) for l in proc.stdout], daemon=True).start()
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    gateway = f"http://127.0.0.1:{port}"
    series = ('workers_requests_total{method="GET",route="/*",status="4xx",worker="rest-shop-gateway"}')

    def wait_for(what: str, count: int) -> None:
        deadline = time.monotonic() + 120
        while sum(l.get("event") == what for l in list(lines)) < count:
            assert proc.poll() is None and time.monotonic() < deadline, [l for l in lines if "event" in l]
            time.sleep(0.05)

    wait_for("metrics_ready", 4)
    wait_for("ready", 4)
    url = next(l["metrics_url"] for l in lines if l.get("event") == "metrics_ready"
               and l["worker"] == "rest-shop-gateway")
    for _ in range(3):
        assert call("GET", f"{gateway}/api/products/{ObjectId()}")[0] == 404
    assert scrape(url)[1][series] == 3
    proc.send_signal(signal.SIGHUP)
    wait_for("reloaded", 1)
    status, after = scrape(url)  # answered by the new process, which has counted nothing itself
    assert status == 200 and after[series] == 3
    assert call("GET", f"{gateway}/api/products/{ObjectId()}")[0] == 404
    after = scrape(url)[1]
    assert after[series] == 4
    assert after['workers_requests_in_flight{worker="rest-shop-gateway"}'] == 0
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
