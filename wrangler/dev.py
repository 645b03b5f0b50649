"""`wrangler dev`: every worker in one process, each on its own port, plus the tail API."""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
from pathlib import Path

from durable import config as wconfig
from durable.config import ConfigError, WorkerConfig
from durable.dev.local_servers import ANNOUNCED
from durable.dev.registry import RegistryEntry, register, unregister
from durable.env import read_dev_vars
from durable.observe.dashboard import PREFIX as DASHBOARD
from durable.observe.dashboard import add_dashboard
from durable.observe.logs import setup_logging
from durable.observe.metrics import RuntimeCollector
from durable.observe.metrics_api import METRICS_PATH, announce_target, metrics_handler
from durable.observe.tail_api import TailServer, create_tail_app
from durable.runtime import Runtime, settle_heap
from durable.server import Server, bind, url_of, websocket_max_bytes
from durable.worker import SCHEDULED_HANDLER_PATH, SCHEDULED_TEST_PATH

from .cluster import INTERNAL_KEY_ENV, cluster_settings, run_nodes
from .embedded_mongo import EmbeddedMongo, start_for_dev

DEFAULT_PORT = 8787
DEFAULT_IP = "127.0.0.1"


def load_configs(args: argparse.Namespace, *, strict: bool = False) -> list[WorkerConfig]:
    """The configs to run; `wrangler dev` warns about keys it does not know, `serve` refuses them."""
    paths = list(args.config or wconfig.discover(Path.cwd()))
    if not paths:
        raise ConfigError(Path.cwd(), "", "no wrangler.jsonc, wrangler.json or wrangler.toml here or in any "
                                          "sub-folder; pass -c PATH")
    overrides: dict[str, str] = {}
    for item in args.var:
        name, sep, value = item.partition(":")
        if not sep or not name:
            raise ConfigError("--var", item, "expected NAME:VALUE")
        overrides[name] = value
    configs = [wconfig.load(p, args.env, strict=strict) for p in paths]
    return [c.model_copy(update={"vars": {**c.vars, **overrides}}) if overrides else c for c in configs]


def primary_worker(configs: list[WorkerConfig], explicit: bool, ordered: list[WorkerConfig]) -> WorkerConfig:
    """The first -c config, or else the worker nothing binds to (the edge: the gateway)."""
    if explicit:
        return configs[0]
    depended = set().union(*(c.dependencies for c in configs))
    roots = [c for c in ordered if c.name not in depended]
    return roots[-1] if roots else ordered[-1]


def state_dir(args: argparse.Namespace) -> Path:
    return (args.persist_to or Path.cwd() / ".wrangler" / "state").resolve()


def stop_on_signals() -> asyncio.Event:
    """Set by SIGINT or SIGTERM: the caller shuts down cleanly when it is."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def needs_embedded_mongo(configs: list[WorkerConfig]) -> bool:
    """A worker requires MONGODB_URI and neither the environment nor its .dev.vars provides it."""
    if "MONGODB_URI" in os.environ:
        return False
    return any(c.secrets and "MONGODB_URI" in c.secrets.required and "MONGODB_URI" not in read_dev_vars(c)
               for c in configs)


def fill_public_url(configs: list[WorkerConfig], url: str) -> None:
    """A worker that declares an empty `PUBLIC_BASE_URL` var gets this session's primary URL:
    where callbacks from outside (local payment providers) reach the session."""
    for config in configs:
        if "PUBLIC_BASE_URL" in config.vars and not str(config.vars["PUBLIC_BASE_URL"]).strip():
            config.vars["PUBLIC_BASE_URL"] = url


async def run_dev(args: argparse.Namespace) -> int:
    setup_logging("text")
    configs = load_configs(args)
    persist_to = state_dir(args)
    if args.nodes > 1:
        return await run_nodes(args, configs, persist_to, needs_embedded_mongo(configs))
    if args.nodes < 1:
        raise ConfigError("--nodes", str(args.nodes), "expected 1 or more")
    mongo: EmbeddedMongo | None = None
    if needs_embedded_mongo(configs):
        mongo = await start_for_dev(persist_to)
        if mongo is None:
            return 1
        os.environ["MONGODB_URI"] = mongo.uri
    try:
        return await _serve(args, configs, persist_to)
    finally:
        if mongo is not None:
            await asyncio.to_thread(mongo.stop)


async def _serve(args: argparse.Namespace, configs: list[WorkerConfig], persist_to: Path) -> int:
    cluster = cluster_settings(args, {}) if args.cluster_member else None
    runtime = Runtime(configs, persist_to=persist_to, local_dev=True, alarm_backoff_s=args.alarm_backoff,
                      cluster=cluster, internal_key=os.environ.get(INTERNAL_KEY_ENV) if cluster else None)
    primary = primary_worker(configs, bool(args.config), runtime.configs)
    ip = args.ip or primary.dev.ip or DEFAULT_IP

    sockets = _bind_workers(args, runtime.configs, primary, ip, clustered=cluster is not None)
    fill_public_url(runtime.configs, url_of(sockets[runtime.configs.index(primary)]))
    if cluster is not None:
        cluster.urls = {c.name: url_of(sock) for c, sock in zip(runtime.configs, sockets)}
    await runtime.start()
    scheduled_paths = {SCHEDULED_HANDLER_PATH} | ({SCHEDULED_TEST_PATH} if getattr(args, "test_scheduled", False)
                                                  else set())
    for worker in runtime.workers.values():
        if worker.handles_scheduled:
            worker.scheduled_paths = frozenset(scheduled_paths)
    servers: list[Server] = []
    names: list[str] = []
    target: Path | None = None  # this process's scrape target, announced for Prometheus
    try:
        servers = [Server(runtime.workers[c.name], sock, websocket_max_bytes=websocket_max_bytes(c.vars))
                   for c, sock in zip(runtime.configs, sockets)]
        operator_app = create_tail_app(runtime.hub, set(runtime.workers))  # tail API and /metrics
        operator_app.router.add_get(METRICS_PATH, metrics_handler([RuntimeCollector(runtime)]))
        if args.dashboard:
            add_dashboard(operator_app, runtime, {c.name: s.url for c, s in zip(runtime.configs, servers)})
        tail_server = TailServer(operator_app, bind(ip, 0))
        for server in (*servers, tail_server):
            await server.start()
        settle_heap()
        for config, server in zip(runtime.configs, servers):
            register(RegistryEntry(name=config.name, url=server.url, tail_url=tail_server.url, pid=os.getpid(),
                                   internal_key=runtime.internal_key, durable_objects=config.hosted_classes,
                                   persist_to=str(persist_to)))
            names.append(config.name)

        _print_banner(runtime, primary, servers, tail_server.url, persist_to, args.dashboard)
        node_id = runtime.node.node_id if runtime.node is not None else "dev"
        target = announce_target(persist_to, f"{node_id}-{os.getpid()}", tail_server.url, {"node": node_id})
        primary_url = servers[runtime.configs.index(primary)].url
        print(f"[wrangler:info] Ready on {primary_url}", flush=True)

        await stop_on_signals().wait()
        print("\n[wrangler:info] Shutting down…", flush=True)
    finally:
        for name in names:
            unregister(name, os.getpid())
        if target is not None:
            target.unlink(missing_ok=True)
        await runtime.depart()  # a cluster node hands its shards off while it still answers
        for server in servers:
            await server.stop()
        if "tail_server" in locals():
            await tail_server.stop()
        await runtime.close()
    return 0


def _bind_workers(args: argparse.Namespace, configs: list[WorkerConfig], primary: WorkerConfig, ip: str, *,
                  clustered: bool) -> list[socket.socket]:
    """Before start-up: a busy port fails fast, and the public URL is known. The primary takes
    --port; the others their [dev] ports (or any); a cluster node, several on one machine, any."""
    sockets = []
    for config in configs:
        if config is primary:
            sockets.append(bind(ip, args.port if args.port is not None else (config.dev.port or DEFAULT_PORT)))
        elif clustered:
            sockets.append(bind(ip, 0))
        else:
            sockets.append(bind(ip, 0 if args.port == 0 else (config.dev.port or 0), fallback_to_any=True))
    return sockets


def _print_banner(runtime: Runtime, primary: WorkerConfig, servers: list[Server], operator_url: str,
                  persist_to: Path, dashboard: bool) -> None:
    width = max(len(c.name) for c in runtime.configs)
    node = f" as cluster node {runtime.node.node_id}" if runtime.node is not None else ""
    print(f"⎔ Starting {len(runtime.configs)} worker(s){node}; state in {persist_to}", flush=True)
    for config, server in zip(runtime.configs, servers):
        tag = "  (primary)" if config is primary else ""
        print(f"  {config.name:<{width}}  {server.url}{tag}", flush=True)
    print(f"  {'tail API':<{width}}  {operator_url}", flush=True)
    print(f"  {'metrics':<{width}}  {operator_url}{METRICS_PATH}", flush=True)
    if dashboard:
        print(f"  {'dashboard':<{width}}  {operator_url}{DASHBOARD}/", flush=True)
    for label, url in ANNOUNCED.items():  # local stand-ins' pages (captured mail, …)
        print(f"  {label:<{width}}  {url}", flush=True)
