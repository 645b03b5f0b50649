"""Shared fixtures: fixture workers, an in-process runtime, and real `wrangler dev` subprocesses."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from durable import config as wconfig
from durable.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "workers"
COUNTER_TOML = FIXTURES / "fx_counter" / "wrangler.toml"
PEER_TOML = FIXTURES / "fx_peer" / "wrangler.toml"


@pytest.fixture(autouse=True)
def _isolated_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own dev registry, so parallel or leftover sessions never collide."""
    path = tmp_path / "registry"
    monkeypatch.setenv("WRANGLER_REGISTRY_PATH", str(path))
    return path


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = Runtime([wconfig.load(COUNTER_TOML), wconfig.load(PEER_TOML)], persist_to=tmp_path / "state",
                 alarm_backoff_s=0.02)
    await rt.start()
    try:
        yield rt
    finally:
        await rt.close()


class DevProcess:
    """A real `wrangler dev` in a subprocess; knows its URLs once it printed 'Ready on'."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "wrangler", "dev", *args], cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.urls: dict[str, str] = {}
        self.ready_url = ""
        self.stderr_lines: list[str] = []
        self.banner: list[str] = []  # what it printed up to 'Ready on'
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        deadline = time.monotonic() + 60
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.banner.append(line)
            match = re.match(r"^\s+(\S+|tail API)\s+(http://\S+)", line)
            if match:
                self.urls["tail" if match.group(1) == "tail API" else match.group(1)] = match.group(2)
            if "Ready on" in line:
                self.ready_url = line.split("Ready on", 1)[1].strip()
                break
            if time.monotonic() > deadline:
                break
        if not self.ready_url:
            self.proc.kill()
            raise RuntimeError("wrangler dev did not start:\n" + "".join(self.stderr_lines))
        self.stdout_lines: list[str] = []
        self._stdout_seen = threading.Condition()
        threading.Thread(target=self._drain_stdout, daemon=True).start()

    def wait_for_output(self, text: str, timeout: float = 60) -> None:
        """Block until `text` appears in a stdout line (or fail after `timeout`)."""
        with self._stdout_seen:
            if not self._stdout_seen.wait_for(lambda: any(text in line for line in self.stdout_lines), timeout):
                raise AssertionError(f"{text!r} not printed; stderr:\n" + "".join(self.stderr_lines[-30:]))

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def _drain_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._stdout_seen:
                self.stdout_lines.append(line)
                self._stdout_seen.notify_all()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=30)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


def stop_gracefully(proc: subprocess.Popen[Any], timeout_s: float = 30.0) -> None:
    """Stop a `wrangler serve` as an operator does: SIGTERM, then SIGKILL if it has not stopped."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def dev_process(tmp_path: Path) -> Iterator[type[DevProcess]]:
    """Factory for `wrangler dev` subprocesses; all are stopped at the end of the test."""
    started: list[DevProcess] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def start(*args: str, cwd: Path = ROOT, extra_env: dict[str, str | None] | None = None) -> DevProcess:
        """`extra_env` adds variables; a None value removes one."""
        merged = {**env, **(extra_env or {})}
        process = DevProcess(list(args), cwd, {k: v for k, v in merged.items() if v is not None})
        started.append(process)
        return process

    yield start  # type: ignore[misc]
    for process in started:
        if process.proc.poll() is None:
            try:
                process.stop()  # graceful: lets it stop its embedded database
            except subprocess.TimeoutExpired:
                process.proc.kill()
                process.proc.wait(timeout=10)


# -- the base service on a real server, against the embedded (or a real) MongoDB -------------
import uuid  # noqa: E402
from typing import Any  # noqa: E402

import aiohttp  # noqa: E402
from pymongo import MongoClient  # noqa: E402

from durable.server import Server, bind, url_of  # noqa: E402
from tests.accounts import mint_token  # noqa: E402
from tests.net import free_port  # noqa: E402
from wrangler.embedded_mongo import EmbeddedMongo  # noqa: E402

BASE_TOML = ROOT / "base" / "wrangler.toml"
JWT_KEY = "test-jwt-key-" + "x" * 40
SERVICE_AUTH_KEY = "test-service-key-" + "s" * 40
UNLIMITED = ("base.read=1000000/60, base.write=1000000/60, payments.read=1000000/60, payments.write=1000000/60, "
             "payments.webhook=1000000/60, images.read=1000000/60")
FX_PAYER_TOML = FIXTURES / "fx_payer" / "wrangler.toml"
# a WebSocket handshake's request headers, to read a refused upgrade's HTTP answer with a plain GET
WEBSOCKET_UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                     "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One embedded server for the session; a real MongoDB instead when MONGODB_URI is set."""
    if os.environ.get("MONGODB_URI"):
        yield os.environ["MONGODB_URI"]
        return
    server = EmbeddedMongo(tmp_path_factory.mktemp("mongo"))
    uri = server.start_sync()
    yield uri
    server.stop()


def with_vars(path: Path, **overrides: Any):
    config = wconfig.load(path)
    return config.model_copy(update={"vars": {**config.vars, **{k: str(v) for k, v in overrides.items()}}})


class Shop:
    """The base worker served on 127.0.0.1, with an HTTP client and token helpers."""

    def __init__(self, runtime: Runtime, url: str, db_name: str, mongo_uri: str) -> None:
        self.runtime = runtime
        self.url = url
        self.db_name = db_name
        self.mongo_uri = mongo_uri
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200))
        self._db: Any = None

    @property
    def worker(self):
        return self.runtime.workers["rest-shop-api"]

    def token(self, role: str = "user", user_id: str | None = None, email: str | None = None, **kw: Any) -> str:
        """A token of a real account (created on first use), as login would issue it."""
        if self._db is None:
            self._db = self.db()
        return mint_token(self._db, JWT_KEY, role, user_id, email, **kw)

    async def call(self, method: str, path: str, json: Any = None, token: str | None = None,
                   headers: dict[str, str] | None = None, data: Any = None) -> tuple[int, Any, Any]:
        all_headers = dict(headers or {})
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(method, self.url + path, json=json, data=data, headers=all_headers) as resp:
            raw = await resp.read()
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = raw
            return resp.status, body, resp.headers

    async def product(self, **fields: Any) -> dict[str, Any]:
        body = {"name": "Widget", "price": 10, "stock": 10, **fields}
        status, created, _ = await self.call("POST", "/products", body, token=self.token("admin"))
        assert status == 201, created
        return created

    def db(self) -> Any:
        return MongoClient(self.mongo_uri)[self.db_name]


@pytest.fixture
def make_shop(tmp_path: Path, mongo_uri: str, monkeypatch: pytest.MonkeyPatch):
    """Factory: the base worker (plus extra configs) with var overrides, on a fresh database."""
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("JWT_KEY", JWT_KEY)
    async def start(extra: list[Path] = (), **overrides: Any) -> Shop:
        db_name = f"t_{uuid.uuid4().hex[:16]}"
        sock = bind("127.0.0.1", 0)  # first: its URL is the public one (sign-in callbacks)
        values = {"MONGODB_DB": db_name, "SIGNUP_RATE_LIMIT": "10000/60", "LOGIN_RATE_LIMIT": "10000/60",
                  "UPLOADS_DIR": tmp_path / "uploads", "PUBLIC_BASE_URL": url_of(sock), **overrides}
        configs = [with_vars(BASE_TOML, **values), *(with_vars(p, **values) for p in extra)]
        runtime = Runtime(configs, persist_to=tmp_path / f"state-{db_name}", alarm_backoff_s=0.05)
        await runtime.start()
        server = Server(runtime.workers["rest-shop-api"], sock)
        await server.start()
        shop = Shop(runtime, server.url, db_name, mongo_uri)
        shop.server = server
        return shop

    return start


@pytest.fixture
async def shops(make_shop) -> AsyncIterator[Any]:
    """Like make_shop, closing everything it started at the end of the test."""
    made: list[Shop] = []

    async def start(*args: Any, **kwargs: Any) -> Shop:
        shop = await make_shop(*args, **kwargs)
        made.append(shop)
        return shop

    yield start
    for shop in made:
        await shop.http.close()
        await shop.server.stop()
        await shop.runtime.close()
        MongoClient(shop.mongo_uri).drop_database(shop.db_name)


@pytest.fixture
async def shop(shops) -> Shop:
    return await shops()


PAYMENTS_TOML = ROOT / "payments" / "wrangler.toml"
GATEWAY_TOML = ROOT / "gateway" / "wrangler.toml"
IMAGES_TOML = ROOT / "images" / "wrangler.toml"


@contextlib.asynccontextmanager
async def open_full_shop(tmp_path: Path, mongo_uri: str, *, gateway_vars: dict[str, Any] | None = None,
                         base_vars: dict[str, Any] | None = None,
                         payments_vars: dict[str, Any] | None = None,
                         images_vars: dict[str, Any] | None = None) -> AsyncIterator[Shop]:
    """All four workers in one runtime on fresh databases; `shop.url` is the gateway on a real socket.
    The services demand the gateway's signature. The caller puts MONGODB_URI, JWT_KEY and
    SERVICE_AUTH_KEY in the environment (see `shop_environment`)."""
    db_name = f"t_{uuid.uuid4().hex[:16]}"
    sock = bind("127.0.0.1", 0)  # first: the gateway's URL is the shop's public URL
    configs = [with_vars(BASE_TOML, **{"MONGODB_DB": db_name, "SIGNUP_RATE_LIMIT": "10000/60",
                                       "LOGIN_RATE_LIMIT": "10000/60", "REQUIRE_SERVICE_AUTH": "true",
                                       "PUBLIC_BASE_URL": url_of(sock), **(base_vars or {})}),
               with_vars(IMAGES_TOML, **{"REQUIRE_SERVICE_AUTH": "true", "RESIZE_WORKERS": 1, **(images_vars or {})}),
               with_vars(PAYMENTS_TOML, **{"MONGODB_DB": f"{db_name}_pay", "PROVIDER_TIMEOUT_S": 1,
                                           "REQUIRE_SERVICE_AUTH": "true", "PUBLIC_BASE_URL": url_of(sock),
                                           "RETURN_URL_ORIGINS": "https://shop.example", **(payments_vars or {})}),
               with_vars(GATEWAY_TOML, **{"RATE_LIMITS": UNLIMITED, **(gateway_vars or {})})]
    runtime = Runtime(configs, persist_to=tmp_path / "state", alarm_backoff_s=0.05)
    await runtime.start()
    server = Server(runtime.workers["rest-shop-gateway"], sock)
    await server.start()
    shop = Shop(runtime, server.url, db_name, mongo_uri)
    try:
        yield shop
    finally:
        await shop.http.close()
        await server.stop()
        await runtime.close()
        client = MongoClient(mongo_uri)
        client.drop_database(db_name)
        client.drop_database(f"{db_name}_pay")


def shop_environment(monkeypatch: pytest.MonkeyPatch, mongo_uri: str) -> None:
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("JWT_KEY", JWT_KEY)
    monkeypatch.setenv("SERVICE_AUTH_KEY", SERVICE_AUTH_KEY)
    for name in ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def full_shop(tmp_path: Path, mongo_uri: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Shop]:
    """All three workers in one runtime; `shop.url` is the gateway on a real socket."""
    shop_environment(monkeypatch, mongo_uri)
    async with open_full_shop(tmp_path, mongo_uri) as shop:
        yield shop


@pytest.fixture
async def custom_shop(tmp_path: Path, mongo_uri: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    """Factory: the full shop with var overrides per worker (`gateway_vars`, `base_vars`, `payments_vars`)."""
    shop_environment(monkeypatch, mongo_uri)
    started = [0]
    async with contextlib.AsyncExitStack() as stack:
        async def start(**vars_by_worker: Any) -> Shop:
            started[0] += 1
            return await stack.enter_async_context(open_full_shop(tmp_path / f"s{started[0]}", mongo_uri,
                                                                  **vars_by_worker))
        yield start


@pytest.fixture
def stripe_server():
    """The local Stripe server in a process of its own: (its URL, its API key)."""
    port = free_port()
    key = f"sk_test_{uuid.uuid4().hex}"
    proc = subprocess.Popen([sys.executable, "-m", "payments.local.stripe_server", "--port", str(port),
                             "--api-key", key], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert "local Stripe API on" in proc.stdout.readline()
    yield f"http://127.0.0.1:{port}", key
    proc.terminate()
    proc.wait(timeout=10)
