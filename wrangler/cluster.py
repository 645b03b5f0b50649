"""Cluster options shared by `dev` and `serve`, and `wrangler dev --nodes N`.

`wrangler serve --cluster` joins this process to a cluster whose coordination store is the
MongoDB at `DURABLE_CLUSTER_URI` (or `MONGODB_URI`). `wrangler dev --nodes N` starts the
embedded database once, then N dev processes that each run every worker as one node of a
cluster on this machine, and prints every node's addresses.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import signal
import sys
from pathlib import Path

from durable.cluster.node import ClusterSettings
from durable.cluster.placement import DEFAULT_SHARDS
from durable.config import ConfigError, WorkerConfig
from durable.env import ANNOUNCED_ENV, load_secrets

from .embedded_mongo import EmbeddedMongo, start_for_dev
from .supervisor import Supervisor, WhenOneDies

INTERNAL_KEY_ENV = "DURABLE_INTERNAL_KEY"  # how `dev --nodes` gives its nodes one key for object calls
URI_ENV = "DURABLE_CLUSTER_URI"


def cluster_options(command: argparse.ArgumentParser, *, hidden: bool = False) -> None:
    def helptext(text: str) -> str:
        return argparse.SUPPRESS if hidden else text

    command.add_argument("--node-id", default=None, help=helptext("this node's id (default host-pid-random)"))
    command.add_argument("--lease", type=float, default=6.0, metavar="SECONDS",
                         help=helptext("membership lease: a node silent this long is dead and its shards move"))
    command.add_argument("--shards", type=int, default=DEFAULT_SHARDS,
                         help=helptext("shards per Durable Object namespace (the same on every node)"))
    command.add_argument("--cluster-db", default="durable_cluster", metavar="NAME",
                         help=helptext("database (in the coordination MongoDB) for members, leases and object storage"))
    command.add_argument("--advertise", default=None, metavar="URL",
                         help=helptext("the URL other nodes reach this one at (default: the address it listens on)"))


def cluster_settings(args: argparse.Namespace, urls: dict[str, str]) -> ClusterSettings:
    uri = os.environ.get(URI_ENV) or os.environ.get("MONGODB_URI")
    if not uri:
        raise ConfigError("--cluster", URI_ENV, f"a cluster node needs its coordination database: set {URI_ENV} "
                                                "(or MONGODB_URI) to a MongoDB replica set")
    if args.shards < 1:
        raise ConfigError("--shards", str(args.shards), "expected a positive number of shards")
    if args.lease < 1:
        raise ConfigError("--lease", str(args.lease), "expected at least 1 second")
    return ClusterSettings(uri=uri, database=args.cluster_db, node_id=args.node_id or "", lease_s=args.lease,
                           shards=args.shards, urls=urls)


def node_command(args: argparse.Namespace, index: int) -> list[str]:
    command = [sys.executable, "-m", "wrangler", "dev", "--cluster-member",
               "--port", str(0 if index or args.port == 0 else (args.port or 8787)),
               "--node-id", f"node-{index}", "--lease", str(args.lease), "--shards", str(args.shards),
               "--cluster-db", args.cluster_db,
               "--alarm-backoff", str(args.alarm_backoff)]
    for path in args.config or []:
        command += ["-c", str(path)]
    for flag, value in (("--env", args.env), ("--ip", args.ip), ("--persist-to", args.persist_to)):
        if value is not None:
            command += [flag, str(value)]
    for item in args.var:
        command += ["--var", item]
    if not args.dashboard:
        command.append("--no-dashboard")
    return command


async def _relay(index: int, stream: asyncio.StreamReader, ready: asyncio.Future[str], lines: list[str]) -> None:
    """Forward a node's output with its name in front; note its 'Ready on' URL."""
    while line := (await stream.readline()).decode(errors="replace"):
        if not ready.done():
            lines.append(line)
            match = re.search(r"Ready on (\S+)", line)
            if match:
                ready.set_result(match.group(1))
            continue
        sys.stdout.write(f"[node-{index}] {line}")
        sys.stdout.flush()
    if not ready.done():
        ready.set_exception(RuntimeError(f"node-{index} exited before it was ready:\n" + "".join(lines[-20:])))


async def _start_nodes(args: argparse.Namespace, env: dict[str, str], supervisor: Supervisor) -> list[str]:
    """Start the nodes with their output relayed; each one's 'Ready on' URL once it serves."""
    readies: list[asyncio.Future[str]] = []
    outputs: list[list[str]] = []
    for index in range(args.nodes):
        proc = await asyncio.create_subprocess_exec(*node_command(args, index), env=env, stdout=asyncio.subprocess.PIPE)
        supervisor.children[f"node-{index}"] = proc
        ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        lines: list[str] = []
        readies.append(ready)
        outputs.append(lines)
        assert proc.stdout is not None
        _RELAYS.add(asyncio.ensure_future(_relay(index, proc.stdout, ready, lines)))
    urls = await asyncio.gather(*readies)
    for index, lines in enumerate(outputs):
        for line in lines:
            if line.startswith("  "):
                print(f"  node-{index} {line.strip()}", flush=True)
    return urls


_RELAYS: set[asyncio.Future[None]] = set()  # kept referenced while the nodes run


async def _node_environment(configs: list[WorkerConfig], persist_to: Path,
                            needs_mongo: bool) -> tuple[dict[str, str], EmbeddedMongo | None] | None:
    """What every node starts with: one internal key, the database (embedded unless one is set),
    and the dev secrets, made once here so every node signs alike (and warns about them once)."""
    env = {**os.environ, INTERNAL_KEY_ENV: os.environ.get(INTERNAL_KEY_ENV) or secrets.token_urlsafe(32),
           "PYTHONUNBUFFERED": "1"}
    mongo: EmbeddedMongo | None = None
    if needs_mongo or not (env.get(URI_ENV) or env.get("MONGODB_URI")):  # the workers' or the cluster's own
        mongo = await start_for_dev(persist_to)
        if mongo is None:
            return None
        env[URI_ENV if not needs_mongo else "MONGODB_URI"] = mongo.uri
    env.setdefault(URI_ENV, env.get("MONGODB_URI", ""))
    for config in configs:
        load_secrets(config, state_dir=persist_to, local_dev=True, environ=env)
    env[ANNOUNCED_ENV] = "1"  # the nodes make the same values from the same file: warned once, here
    return env, mongo


async def run_nodes(args: argparse.Namespace, configs: list[WorkerConfig], persist_to: Path, needs_mongo: bool) -> int:
    """`wrangler dev --nodes N`: N node processes on this machine, one embedded database."""
    prepared = await _node_environment(configs, persist_to, needs_mongo)
    if prepared is None:
        return 1
    env, mongo = prepared
    supervisor = Supervisor(grace_s=30.0, stop_signal=signal.SIGINT)
    try:
        try:
            urls = await _start_nodes(args, env, supervisor)
        except RuntimeError as exc:
            print(f"✘ [ERROR] {exc}", file=sys.stderr)
            return 1
        print(f"⎔ Cluster of {args.nodes} nodes; state in {persist_to}", flush=True)
        print(f"[wrangler:info] Ready on {urls[0]}", flush=True)
        await supervisor.watch(WhenOneDies.CARRY_ON, on_death=lambda name, proc: print(
            f"✘ [{name}] exited with code {proc.returncode}; the others carry on", file=sys.stderr, flush=True))
        print("\n[wrangler:info] Shutting down…", flush=True)
        return 0
    finally:
        await supervisor.stop_all(together=True)
        if mongo is not None:
            await asyncio.to_thread(mongo.stop)
