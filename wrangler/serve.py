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
import ipaddress
import logging
import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from dotenv import dotenv_values
from prometheus_client.multiprocess import mark_process_dead

from durable.config import ConfigError, WorkerConfig, is_development
from durable.observe.dashboard import PREFIX as DASHBOARD
from durable.observe.dashboard import add_dashboard
from durable.observe.logs import setup_logging
from durable.observe.metrics import RuntimeCollector
from durable.observe.metrics_api import METRICS_PATH, create_metrics_app
from durable.observe.tail import redactor
from durable.observe.tail_api import TailServer, create_tail_app
from durable.preflight import problems, refuse_if_any
from durable.rpc.listeners import public_only
from durable.rpc.tls import MutualTls
from durable.runtime import Runtime, settle_heap, start_order
from durable.server import Server, bind, url_of, websocket_max_bytes

from .cluster import cluster_settings
from .dev import (
    DEFAULT_IP,
    DEFAULT_PORT,
    load_configs,
    primary_worker,
    state_dir,
    stop_on_signals,
)
from .supervisor import Process, Supervisor, WhenOneDies

log = logging.getLogger("wrangler.serve")
MIN_TAIL_TOKEN_BYTES = 32
READY_TIMEOUT_S = 120.0  # a reload's new process must be serving within this


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


def plaintext_between_nodes(args: argparse.Namespace) -> str | None:
    """What is wrong when cluster nodes would talk in the clear across a network: the internal
    listener binds a non-loopback address (with --cluster, the public one) and has no TLS."""
    if not args.cluster or internal_tls(args) is not None:
        return None
    address = internal_ip(args, args.ip or DEFAULT_IP)
    try:
        if ipaddress.ip_address(address).is_loopback:
            return None
    except ValueError:
        pass  # a host name: not known to stay on this host
    return (f"the internal listener on {address} takes object calls and service-binding forwards (users' tokens, "
            f"payment bodies) from the other nodes in plain HTTP: give every node --internal-tls-cert, "
            f"--internal-tls-key and --internal-tls-ca (mutual TLS), or say --insecure-internal when the network "
            f"between the nodes is private and trusted")


async def run_serve(args: argparse.Namespace) -> int:
    setup_logging(args.log_format)
    configs = load_configs(args, strict=True)
    found = problems(configs)
    exposed = plaintext_between_nodes(args) if args.public_fd is None else None  # (a child: its supervisor said it)
    if exposed is not None and not all(is_development(c.vars) for c in configs) and not args.insecure_internal:
        found.append(exposed)
    elif exposed is not None:
        print(f"▲ [WARNING] {exposed}", file=sys.stderr)
        log.warning("%s", exposed, extra={"event": "plaintext_between_nodes"})
    if args.tail_port is not None and len(os.environ.get("TAIL_TOKEN", "").encode()) < MIN_TAIL_TOKEN_BYTES:
        # a production tail API streams requests and logs: it needs a strong token, or no start
        found.append("TAIL_TOKEN is missing or shorter than 32 bytes: set a long random one "
                     "(e.g. `openssl rand -base64 48`) to serve a tail")
    metrics_token = os.environ.get("METRICS_TOKEN")
    if metrics_token is not None and len(metrics_token.encode()) < MIN_TAIL_TOKEN_BYTES:
        found.append("METRICS_TOKEN is shorter than 32 bytes: set a long random one, or leave it unset and "
                     "keep --metrics-port on a network only Prometheus reaches")
    if args.dashboard_port is not None and len(os.environ.get("DASHBOARD_TOKEN", "").encode()) < MIN_TAIL_TOKEN_BYTES:
        found.append("DASHBOARD_TOKEN is missing or shorter than 32 bytes: set a long random one to serve the "
                     "dashboard (it shows stored objects and live requests)")
    refuse_if_any(found)
    if len(configs) == 1:
        return await serve_one(args, configs[0])
    return await supervise(args, configs)


async def serve_one(args: argparse.Namespace, config: WorkerConfig) -> int:
    key = os.environ.get("SERVICE_AUTH_KEY")
    if not key:
        raise ConfigError(config.path, "secrets", "SERVICE_AUTH_KEY is not set: workers sign their calls to "
                                                  "each other with it; set the same value for every worker")
    ip = args.ip or config.dev.ip or DEFAULT_IP
    port = args.port if args.port is not None else (config.dev.port or DEFAULT_PORT)
    # before start-up: a busy port fails fast, before any state is opened (or the supervisor's,
    # which it keeps open across reloads, so old and new process serve one queue of connections)
    sock = listening(args.public_fd, ip, port)
    tls = internal_tls(args)
    internal_sock = listening(args.internal_fd, internal_ip(args, ip), args.internal_port)
    runtime = _runtime(args, config, key, sock, internal_sock)
    tail_sock = listening(args.tail_fd, ip, args.tail_port) if args.tail_port is not None else None
    metrics_sock = (listening(args.metrics_fd, internal_ip(args, ip), args.metrics_port)
                    if args.metrics_port is not None else None)
    dashboard_sock = (listening(args.dashboard_fd, internal_ip(args, ip), args.dashboard_port)
                      if args.dashboard_port is not None else None)
    await runtime.start()
    worker = runtime.workers[config.name]
    frames = websocket_max_bytes(config.vars)
    server = Server(public_only(worker), sock, graceful_timeout_s=args.grace, websocket_max_bytes=frames)
    # the internal listener takes object calls and service-binding forwards (see durable/rpc/listeners.py)
    internal = Server(worker, internal_sock, graceful_timeout_s=args.grace, tls=tls, websocket_max_bytes=frames)
    await server.start()
    await internal.start()
    settle_heap()
    tail_server = await _tail_api(runtime, config, tail_sock)
    metrics_server = await _metrics_api(runtime, config, metrics_sock)
    dashboard_server = await _dashboard(runtime, config, dashboard_sock, server.url)
    log.info("%s ready on %s (internal listener %s)", config.name, server.url, internal.url,
             extra={"worker": config.name, "url": server.url, "internal_url": internal.url, "event": "ready"})
    print(f"[wrangler:info] Ready on {server.url}", file=sys.stderr, flush=True)
    _tell_supervisor_ready(args)
    stop = stop_on_signals()
    try:
        await stop.wait()
        log.info("%s stopping: finishing requests in flight (up to %g s)", config.name, args.grace,
                 extra={"worker": config.name, "event": "stopping"})
    finally:
        for operator_server in (tail_server, dashboard_server):
            if operator_server is not None:
                await operator_server.stop()
        await runtime.depart()   # a cluster node hands its shards off while it still answers
        # stop accepting; in-flight requests (other processes' calls to our objects, too) finish
        # within the grace period; both drain at once (durable/server.py, DRAIN_IDLE_S)
        await asyncio.gather(server.stop(), internal.stop())
        await runtime.close()    # then flush object storage and close database clients
        if metrics_server is not None:  # last: a scrape sees the stop through (requests in flight: 0)
            await metrics_server.stop()
    log.info("%s stopped", config.name, extra={"worker": config.name, "event": "stopped"})
    return 0


def _runtime(args: argparse.Namespace, config: WorkerConfig, key: str, sock: socket.socket,
             internal_sock: socket.socket) -> Runtime:
    """The worker's runtime; in a cluster other nodes reach it at the advertised (or bound) addresses."""
    tls = internal_tls(args)
    internal_url = (args.internal_advertise or url_of(internal_sock, "https" if tls else "http")).rstrip("/")
    cluster = None
    if args.cluster:
        cluster = cluster_settings(args, {config.name: (args.advertise or url_of(sock)).rstrip("/")})
        cluster.internal_urls = {config.name: internal_url}
    return Runtime([config], persist_to=state_dir(args), local_dev=False, internal_key=key,
                   remote=parse_remotes(args.remote),
                   remote_internal=parse_remotes(args.remote_internal, "--remote-internal"),
                   use_registry=False, cluster=cluster, internal_tls=tls)


async def _tail_api(runtime: Runtime, config: WorkerConfig, sock: socket.socket | None) -> TailServer | None:
    if sock is None:
        return None
    tail_token = os.environ["TAIL_TOKEN"]  # run_serve's preflight refused a missing or weak one
    redactor.add(tail_token)
    tail_server = TailServer(create_tail_app(runtime.hub, {config.name}, token=tail_token), sock)
    await tail_server.start()
    log.info("%s tail API on %s", config.name, tail_server.url,
             extra={"worker": config.name, "tail_url": tail_server.url, "event": "tail_ready"})
    return tail_server


async def _metrics_api(runtime: Runtime, config: WorkerConfig, sock: socket.socket | None) -> TailServer | None:
    """The operator's scrape target: on the internal address, with an optional bearer token."""
    if sock is None:
        return None
    token = os.environ.get("METRICS_TOKEN") or None
    if token is not None:
        redactor.add(token)
    metrics_server = TailServer(create_metrics_app([RuntimeCollector(runtime)], token=token), sock)
    await metrics_server.start()
    log.info("%s metrics on %s%s", config.name, metrics_server.url, METRICS_PATH,
             extra={"worker": config.name, "metrics_url": metrics_server.url + METRICS_PATH, "event": "metrics_ready"})
    return metrics_server


async def _dashboard(runtime: Runtime, config: WorkerConfig, sock: socket.socket | None, url: str
                     ) -> TailServer | None:
    """The dashboard of this worker process, on the internal address, behind DASHBOARD_TOKEN."""
    if sock is None:
        return None
    token = os.environ["DASHBOARD_TOKEN"]  # run_serve's preflight refused a missing or weak one
    redactor.add(token)
    app = web.Application()
    add_dashboard(app, runtime, {config.name: url}, token=token)
    dashboard_server = TailServer(app, sock)
    await dashboard_server.start()
    log.info("%s dashboard on %s%s/", config.name, dashboard_server.url, DASHBOARD,
             extra={"worker": config.name, "dashboard_url": f"{dashboard_server.url}{DASHBOARD}/",
                    "event": "dashboard_ready"})
    return dashboard_server


def _tell_supervisor_ready(args: argparse.Namespace) -> None:
    """The supervisor waits for this before it stops the process this one replaces."""
    if args.ready_fd is None:
        return
    try:
        os.write(args.ready_fd, b"ready\n")
    except BrokenPipeError:  # it was not waiting (the first start)
        pass
    os.close(args.ready_fd)


def listening(fd: int | None, ip: str, port: int) -> socket.socket:
    """The socket to serve on: the one the supervisor passed (by descriptor), or a new one."""
    if fd is not None:
        return socket.socket(fileno=fd)
    return bind(ip, port)


def child_command(args: argparse.Namespace, config: WorkerConfig, sockets: ChildSockets, remotes: dict[str, str],
                  remote_internals: dict[str, str], ready_fd: int) -> list[str]:
    command = [sys.executable, "-m", "wrangler", "serve", "-c", str(config.path),
               "--port", str(sockets.public.getsockname()[1]), "--public-fd", str(sockets.public.fileno()),
               "--internal-fd", str(sockets.internal.fileno()), "--ready-fd", str(ready_fd),
               "--log-format", args.log_format, "--grace", str(args.grace)]
    if sockets.tail is not None:
        command += ["--tail-port", str(sockets.tail.getsockname()[1]), "--tail-fd", str(sockets.tail.fileno())]
    if sockets.metrics is not None:
        command += ["--metrics-port", str(sockets.metrics.getsockname()[1]),
                    "--metrics-fd", str(sockets.metrics.fileno())]
    if sockets.dashboard is not None:
        command += ["--dashboard-port", str(sockets.dashboard.getsockname()[1]),
                    "--dashboard-fd", str(sockets.dashboard.fileno())]
    for flag, value in (("--env", args.env), ("--ip", args.ip), ("--persist-to", args.persist_to),
                        ("--internal-ip", args.internal_ip),
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
    for name, url in remote_internals.items():
        if name != config.name:
            command += ["--remote-internal", f"{name}={url}"]
    return command


@dataclass
class ChildSockets:
    """A worker's listening sockets, bound once by the supervisor and handed to each process
    that serves it: while one process replaces another, connections wait in one queue."""
    public: socket.socket
    internal: socket.socket
    tail: socket.socket | None = None
    metrics: socket.socket | None = None
    dashboard: socket.socket | None = None

    def fds(self) -> tuple[int, ...]:
        return tuple(s.fileno() for s in (self.public, self.internal, self.tail, self.metrics, self.dashboard)
                     if s is not None)


def child_environment(args: argparse.Namespace) -> dict[str, str]:
    """The environment a worker process starts with: ours, and `--env-file` as it reads now
    (a reload picks up a new DURABLE_VERSION or a rotated secret)."""
    env = dict(os.environ)
    if args.env_file is not None:
        env.update({k: v for k, v in dotenv_values(args.env_file).items() if v is not None})
    return env


def fresh_metrics_dir(state: Path, worker: str) -> Path:
    """Where a worker's processes keep their metrics (prometheus_client's multiprocess files),
    emptied as the supervisor starts: its counters begin at zero, as a process's would."""
    path = state / "metrics" / worker
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


class RollFailed(Exception):
    """A new process did not come up: the old one keeps serving."""


def bind_children(args: argparse.Namespace, configs: list[WorkerConfig],
                  ordered: list[WorkerConfig]) -> dict[str, ChildSockets]:
    """Every worker's sockets, bound here once: the primary on --port, the others on their [dev]
    ports (or any), tail, metrics and dashboard ports numbered in start order."""
    primary = primary_worker(configs, bool(args.config), ordered)
    ip = args.ip or primary.dev.ip or DEFAULT_IP
    inner_ip = internal_ip(args, ip)
    sockets: dict[str, ChildSockets] = {}
    for index, config in enumerate(ordered):
        wanted = (args.port if args.port is not None else (primary.dev.port or DEFAULT_PORT)) if config is primary \
            else (config.dev.port or 0)
        tail = metrics = dashboard = None
        if args.tail_port is not None:
            tail = bind(ip, 0 if args.tail_port == 0 else args.tail_port + index)
        if args.metrics_port is not None:
            metrics = bind(inner_ip, 0 if args.metrics_port == 0 else args.metrics_port + index)
        if args.dashboard_port is not None:
            dashboard = bind(inner_ip, 0 if args.dashboard_port == 0 else args.dashboard_port + index)
        sockets[config.name] = ChildSockets(bind(ip, wanted, fallback_to_any=config is not primary),
                                            bind(inner_ip, 0), tail, metrics, dashboard)
    return sockets


class WorkerProcesses:
    """`wrangler serve` without one `-c`: a process per worker on sockets bound once, replaced one
    at a time on SIGHUP (a rolling reload: with --cluster each new process joins before the old
    one hands its shards off and leaves; alone, the old one stops first, its objects being on this
    host only)."""

    def __init__(self, args: argparse.Namespace, configs: list[WorkerConfig]) -> None:
        self.args = args
        self.ordered = start_order(configs)
        self.sockets = bind_children(args, configs, self.ordered)
        scheme = "https" if internal_tls(args) is not None else "http"
        self.remotes = {name: url_of(s.public) for name, s in self.sockets.items()}
        self.remote_internals = {name: url_of(s.internal, scheme) for name, s in self.sockets.items()}
        # a worker's processes (old and new across a reload) count into one set of files
        self.counted = {config.name: fresh_metrics_dir(state_dir(args), config.name) for config in self.ordered}
        self.supervisor = Supervisor(grace_s=args.grace + 5, on_stopped=self._forget)

    def _forget(self, pid: int) -> None:
        for path in self.counted.values():  # its live gauges (requests in flight…) stop counting
            mark_process_dead(pid, str(path))

    async def spawn(self, config: WorkerConfig, wait: bool) -> Process:
        """A process serving `config`; with `wait`, only once it says it is ready (RollFailed if not)."""
        read_end, write_end = os.pipe()
        try:
            child = await asyncio.create_subprocess_exec(
                *child_command(self.args, config, self.sockets[config.name], self.remotes, self.remote_internals,
                               write_end),
                pass_fds=(*self.sockets[config.name].fds(), write_end),
                env={**child_environment(self.args), "PROMETHEUS_MULTIPROC_DIR": str(self.counted[config.name])})
        finally:
            os.close(write_end)
        try:
            if wait:  # ready, or EOF when it died first
                said = await asyncio.wait_for(asyncio.to_thread(os.read, read_end, 16), READY_TIMEOUT_S)
                if not said:
                    code = await child.wait()
                    self._forget(child.pid)
                    raise RollFailed(f"the new {config.name} process exited with {code}")
        except asyncio.TimeoutError:
            await self.supervisor.stop(child, kill=True)
            raise RollFailed(f"the new {config.name} process was not ready within {READY_TIMEOUT_S:g} s") from None
        finally:
            os.close(read_end)
        return child

    async def roll(self) -> None:
        children = self.supervisor.children
        for config in self.ordered:  # dependencies first, as at start
            old = children[config.name]
            log.info("reload: replacing %s (pid %s)", config.name, old.pid,
                     extra={"worker": config.name, "event": "reloading"})
            try:
                if self.args.cluster:  # the new node joins; then the old one hands off and leaves
                    children[config.name] = await self.spawn(config, wait=True)
                    await self.supervisor.stop(old)
                else:  # one process at a time owns this host's objects: the old one goes first
                    await self.supervisor.stop(old)
                    children[config.name] = await self.spawn(config, wait=True)
            except RollFailed as exc:
                log.error("reload stopped: %s; %s", exc, "the others keep their processes",
                          extra={"worker": config.name, "event": "reload_failed"})
                if not self.args.cluster:
                    children[config.name] = await self.spawn(config, wait=False)  # the old code, back
                return
        log.info("reload: every worker replaced", extra={"event": "reloaded"})


async def supervise(args: argparse.Namespace, configs: list[WorkerConfig]) -> int:
    """Start every worker's process (dependencies first, as their bindings resolve over HTTP), roll
    them on SIGHUP, and stop them all on SIGTERM or when one dies."""
    workers = WorkerProcesses(args, configs)
    try:
        for config in workers.ordered:
            workers.supervisor.children[config.name] = await workers.spawn(config, wait=False)
        died = await workers.supervisor.watch(WhenOneDies.STOP_ALL, reload=workers.roll)
    finally:  # whatever went wrong, no child is left holding the ports
        await workers.supervisor.stop_all()
    if died:
        code = workers.supervisor.children[died[0]].returncode
        log.error("a worker process exited (code %s); stopped the others", code, extra={"event": "worker_died"})
        return 1
    return 0
