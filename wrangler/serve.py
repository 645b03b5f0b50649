"""`wrangler serve`: production. Each worker in its own OS process; bindings between them over
HTTP, signed with SERVICE_AUTH_KEY; JSON log lines on stdout; graceful shutdown on SIGTERM.

With one `-c`, this process serves that worker (what a process manager runs, one unit per
worker, `--remote NAME=URL` for the workers it binds to). Without `-c`, or with several, it
supervises one such child per worker, on the ports of their `[dev]` sections (the primary,
the gateway, on `--port`), and stops them all when it is told to or when one dies.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from durable.config import ConfigError, WorkerConfig
from durable.listeners import internal_only, public_only
from durable.observe.logs import setup_logging
from durable.preflight import problems, refuse_if_any
from durable.runtime import Runtime, settle_heap, start_order
from durable.server import MutualTls, Server, base_url, bind, url_of
from durable.observe.tail import redactor
from durable.observe.tail_api import TailServer, create_tail_app

from .cluster import cluster_settings
from .dev import DEFAULT_IP, DEFAULT_PORT, load_configs, primary_worker, state_dir, stop_on_signals

log = logging.getLogger("wrangler.serve")
MIN_TAIL_TOKEN_BYTES = 32


def parse_remotes(items: list[str], flag: str = "--remote") -> dict[str, str]:
    remotes: dict[str, str] = {}
    for item in items:
        name, sep, url = item.partition("=")
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise ConfigError(flag, item, "expected NAME=http(s)://HOST:PORT")
        remotes[name] = url.rstrip("/")
    return remotes


def internal_tls(args: argparse.Namespace) -> MutualTls | None:
    """Mutual TLS between nodes, when all three of its files are given."""
    given = [args.internal_tls_cert, args.internal_tls_key, args.internal_tls_ca]
    if not any(given):
        return None
    if not all(given):
        raise ConfigError("--internal-tls-cert", "", "mutual TLS between nodes needs --internal-tls-cert, "
                                                     "--internal-tls-key and --internal-tls-ca together")
    for path in given:
        if not os.path.isfile(path):
            raise ConfigError("--internal-tls-*", path, "no such file")
    return MutualTls(args.internal_tls_cert, args.internal_tls_key, args.internal_tls_ca)


def internal_ip(args: argparse.Namespace, public_ip: str) -> str:
    """Not the public listener: loopback by default, the node's address when nodes must reach it."""
    return args.internal_ip or (public_ip if args.cluster else DEFAULT_IP)


async def run_serve(args: argparse.Namespace) -> int:
    setup_logging(args.log_format)
    configs = load_configs(args)
    found = problems(configs)
    if args.tail_port is not None and len(os.environ.get("TAIL_TOKEN", "").encode()) < MIN_TAIL_TOKEN_BYTES:
        # a production tail API streams requests and logs: it needs a strong token, or no start
        found.append("TAIL_TOKEN is missing or shorter than 32 bytes: set a long random one "
                     "(e.g. `openssl rand -base64 48`) to serve a tail")
    refuse_if_any(found)
    if len(configs) == 1:
        return await serve_one(args, configs[0])
    return await supervise(args, configs)


async def serve_one(args: argparse.Namespace, config: WorkerConfig) -> int:
    key = os.environ.get("SERVICE_AUTH_KEY")
    if not key:
        raise ConfigError(config.path, "secrets", "SERVICE_AUTH_KEY is not set: workers sign their calls to "
                                                  "each other with it; set the same value for every worker")
    persist_to = state_dir(args)
    ip = args.ip or config.dev.ip or DEFAULT_IP
    port = args.port if args.port is not None else (config.dev.port or DEFAULT_PORT)
    sock = bind(ip, port)  # before start-up: a busy port fails fast, before any state is opened
    tls = internal_tls(args)
    internal_sock = bind(internal_ip(args, ip), args.internal_port)
    internal_url = (args.internal_advertise or url_of(internal_sock, "https" if tls else "http")).rstrip("/")
    cluster = None
    if args.cluster:  # other nodes reach this one's services and objects at the advertised (or bound) addresses
        cluster = cluster_settings(args, {config.name: (args.advertise or url_of(sock)).rstrip("/")})
        cluster.internal_urls = {config.name: internal_url}
    runtime = Runtime([config], persist_to=persist_to, local_dev=False, internal_key=key,
                      remote=parse_remotes(args.remote),
                      remote_internal=parse_remotes(args.remote_internal, "--remote-internal"),
                      use_registry=False, cluster=cluster, internal_tls=tls)
    tail_sock = bind(ip, args.tail_port) if args.tail_port is not None else None
    await runtime.start()
    worker = runtime.workers[config.name]
    server = Server(public_only(worker), sock, graceful_timeout_s=args.grace)
    internal = Server(internal_only(worker), internal_sock, graceful_timeout_s=args.grace, tls=tls)
    await server.start()
    await internal.start()
    tail_server = None
    settle_heap()
    if tail_sock is not None:
        tail_token = os.environ["TAIL_TOKEN"]  # run_serve's preflight refused a missing or weak one
        redactor.add(tail_token)
        tail_server = TailServer(create_tail_app(runtime.hub, {config.name}, token=tail_token), tail_sock)
        await tail_server.start()
        log.info("%s tail API on %s", config.name, tail_server.url,
                 extra={"worker": config.name, "tail_url": tail_server.url, "event": "tail_ready"})
    log.info("%s ready on %s (internal listener %s)", config.name, server.url, internal.url,
             extra={"worker": config.name, "url": server.url, "internal_url": internal.url, "event": "ready"})
    print(f"[wrangler:info] Ready on {server.url}", file=sys.stderr, flush=True)
    stop = stop_on_signals()
    try:
        await stop.wait()
        log.info("%s stopping: finishing requests in flight (up to %g s)", config.name, args.grace,
                 extra={"worker": config.name, "event": "stopping"})
    finally:
        if tail_server is not None:
            await tail_server.stop()
        await runtime.depart()   # a cluster node hands its shards off while it still answers
        await server.stop()      # stop accepting; in-flight requests finish within the grace period
        await internal.stop()    # (other processes' calls to our objects, too)
        await runtime.close()    # then flush object storage and close database clients
    log.info("%s stopped", config.name, extra={"worker": config.name, "event": "stopped"})
    return 0


def free_port(ip: str, wanted: int) -> int:
    """The worker's configured port, or any free one when that is taken (its siblings are told)."""
    with bind(ip, wanted, fallback_to_any=True) as sock:
        return int(sock.getsockname()[1])


def child_command(args: argparse.Namespace, config: WorkerConfig, port: int, remotes: dict[str, str],
                  tail_port: int | None = None, internal_port: int = 0,
                  remote_internals: dict[str, str] | None = None) -> list[str]:
    command = [sys.executable, "-m", "wrangler", "serve", "-c", str(config.path), "--port", str(port),
               "--log-format", args.log_format, "--grace", str(args.grace), "--internal-port", str(internal_port)]
    for flag, value in (("--env", args.env), ("--ip", args.ip), ("--persist-to", args.persist_to),
                        ("--tail-port", tail_port), ("--internal-ip", args.internal_ip),
                        ("--internal-tls-cert", args.internal_tls_cert), ("--internal-tls-key", args.internal_tls_key),
                        ("--internal-tls-ca", args.internal_tls_ca)):
        if value is not None:
            command += [flag, str(value)]
    for item in args.var:
        command += ["--var", item]
    if args.cluster:
        command += ["--cluster", "--lease", str(args.lease), "--shards", str(args.shards),
                    "--cluster-db", args.cluster_db]
    for name, url in remotes.items():
        if name != config.name:
            command += ["--remote", f"{name}={url}"]
    for name, url in (remote_internals or {}).items():
        if name != config.name:
            command += ["--remote-internal", f"{name}={url}"]
    return command


async def supervise(args: argparse.Namespace, configs: list[WorkerConfig]) -> int:
    ordered = start_order(configs)
    primary = primary_worker(configs, bool(args.config), ordered)
    ip = args.ip or primary.dev.ip or DEFAULT_IP
    ports = {c.name: free_port(ip, c.dev.port or 0) for c in ordered if c is not primary}
    ports[primary.name] = args.port if args.port is not None else (primary.dev.port or DEFAULT_PORT)
    remotes = {name: base_url("http", ip, port) for name, port in ports.items()}
    inner_ip = internal_ip(args, ip)
    scheme = "https" if internal_tls(args) is not None else "http"
    internal_ports = {c.name: free_port(inner_ip, 0) for c in ordered}
    remote_internals = {name: base_url(scheme, inner_ip, port) for name, port in internal_ports.items()}
    children: list[asyncio.subprocess.Process] = []
    for index, config in enumerate(ordered):  # dependencies first, as their bindings resolve over HTTP
        tail_port = None if args.tail_port is None else (0 if args.tail_port == 0 else args.tail_port + index)
        children.append(await asyncio.create_subprocess_exec(*child_command(
            args, config, ports[config.name], remotes, tail_port, internal_ports[config.name], remote_internals)))
    stop = stop_on_signals()
    waits = {asyncio.ensure_future(child.wait()): child for child in children}
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait([stopper, *waits], return_when=asyncio.FIRST_COMPLETED)
    died = [waits[task] for task in done if task in waits]
    # the edge first: what it still has in flight needs the workers behind it, so they stop after it
    for child in reversed(children):
        if child.returncode is None:
            child.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(child.wait(), args.grace + 5)
            except asyncio.TimeoutError:
                child.kill()
                await child.wait()
    stopper.cancel()
    if died:
        log.error("a worker process exited (code %s); stopped the others", died[0].returncode,
                  extra={"event": "worker_died"})
        return 1
    return 0
