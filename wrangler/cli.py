"""Argument parsing for `wrangler`; each subcommand lives in its own module."""
from __future__ import annotations

import argparse
import asyncio
import errno
import sys
from pathlib import Path
from typing import Any

from durable import event_loop
from durable.config import ConfigError
from durable.errors import StartupRefused

from .cluster import cluster_options
from .d1 import add_d1_command, run_d1


def _run_options(command: argparse.ArgumentParser) -> None:
    """What `dev` and `serve` share: where to listen, where state lives, which env, var overrides."""
    command.add_argument("--ip", default=None, help="address to listen on (default 127.0.0.1)")
    command.add_argument("--persist-to", type=Path, default=None, help="state directory (default .wrangler/state)")
    command.add_argument("-e", "--env", default=None, help="use the [env.<name>] sections of the configs")
    command.add_argument("--var", action="append", default=[], metavar="NAME:VALUE",
                         help="override a var of every worker (repeatable), as wrangler's --var")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wrangler", description="Run and inspect rest-shop workers locally.")
    sub = parser.add_subparsers(dest="command", required=True)

    _dev_command(sub)
    _serve_command(sub)
    _tail_command(sub)
    add_d1_command(sub)
    secret = sub.add_parser("secret", help="manage local secrets in a worker's .dev.vars")
    secret.add_argument("action", choices=["put", "list", "delete"])
    secret.add_argument("name", nargs="?")
    secret.add_argument("-c", "--config", type=Path, default=Path("wrangler.toml"))
    return parser


def _dev_command(sub: Any) -> None:
    dev = sub.add_parser("dev", help="run workers locally (./wrangler.jsonc|json|toml, else those of every sub-folder)")
    dev.add_argument("-c", "--config", action="append", type=Path,
                     help="a wrangler.toml, .json or .jsonc; repeat to run several (the first is served on --port)")
    dev.add_argument("--port", type=int, default=None, help="port of the primary worker (default 8787; 0 = any)")
    _run_options(dev)
    dev.add_argument("--nodes", type=int, default=1,
                     help="run every worker as this many node processes of one cluster (default 1: one process)")
    dev.add_argument("--test-scheduled", action="store_true",
                     help="serve /__scheduled?cron=… on each worker: runs its scheduled handler now (as wrangler)")
    dev.add_argument("--no-dashboard", dest="dashboard", action="store_false",
                     help="do not serve the dashboard on the operator listener")
    dev.add_argument("--alarm-backoff", type=float, default=2.0, help=argparse.SUPPRESS)
    dev.add_argument("--cluster-member", action="store_true", help=argparse.SUPPRESS)  # a node of `dev --nodes`
    cluster_options(dev, hidden=True)


def _serve_command(sub: Any) -> None:
    serve = sub.add_parser("serve", help="production: each worker in its own process (all of ./*/wrangler.toml "
                                         "by default), JSON logs, graceful SIGTERM")
    serve.add_argument("-c", "--config", action="append", type=Path,
                       help="a wrangler.toml; exactly one serves that worker in this process")
    serve.add_argument("--port", type=int, default=None, help="port of the worker (or of the primary one)")
    _run_options(serve)
    serve.add_argument("--remote", action="append", default=[], metavar="NAME=URL",
                       help="where another worker this one binds to is served (repeatable)")
    _internal_listener_options(serve)
    serve.add_argument("--log-format", choices=["json", "text"], default="json")
    serve.add_argument("--grace", type=float, default=20.0,
                       help="seconds in-flight requests get to finish after SIGTERM")
    serve.add_argument("--cluster", action="store_true",
                       help="join a cluster: objects are placed over every node serving their worker, storage in "
                            "the MongoDB at DURABLE_CLUSTER_URI (or MONGODB_URI)")
    cluster_options(serve)
    serve.add_argument("--tail-port", type=int, default=None,
                       help="serve the tail API on this port (several workers: this and the next ones, in start "
                            "order); every call needs Authorization: Bearer $TAIL_TOKEN")
    serve.add_argument("--metrics-port", type=int, default=None,
                       help="serve GET /metrics (Prometheus) on this port of the internal address (several workers: "
                            "this and the next ones, in start order); with METRICS_TOKEN set a scrape needs "
                            "Authorization: Bearer $METRICS_TOKEN")
    serve.add_argument("--dashboard-port", type=int, default=None,
                       help="serve the dashboard on this port of the internal address (several workers: this and "
                            "the next ones, in start order); needs DASHBOARD_TOKEN (open /dashboard/?token=… once)")
    serve.add_argument("--env-file", default=None, metavar="PATH",
                       help="KEY=VALUE lines added to the workers' environment, read again at each reload "
                            "(SIGHUP replaces the worker processes one at a time; e.g. a new DURABLE_VERSION)")
    for fd_flag in ("--public-fd", "--internal-fd", "--tail-fd", "--metrics-fd", "--dashboard-fd", "--ready-fd"):  # from the supervisor to a child
        serve.add_argument(fd_flag, type=int, default=None, help=argparse.SUPPRESS)


def _internal_listener_options(serve: argparse.ArgumentParser) -> None:
    """Where other processes and nodes reach this one's objects, and how they prove who they are."""
    serve.add_argument("--internal-ip", default=None, metavar="IP",
                       help="address of the internal listener, which alone takes Durable Object calls from other "
                            "processes and nodes (default 127.0.0.1; with --cluster, --ip)")
    serve.add_argument("--internal-port", type=int, default=0, help="port of the internal listener (default: any)")
    serve.add_argument("--internal-advertise", default=None, metavar="URL",
                       help="the URL other nodes reach the internal listener at (default: the address it listens on)")
    serve.add_argument("--remote-internal", action="append", default=[], metavar="NAME=URL",
                       help="the internal listener of another worker whose objects this one calls (repeatable)")
    serve.add_argument("--internal-tls-cert", default=None, metavar="PEM",
                       help="this node's certificate: object calls between nodes use TLS, both ends showing one")
    serve.add_argument("--internal-tls-key", default=None, metavar="PEM", help="the key of --internal-tls-cert")
    serve.add_argument("--internal-tls-ca", default=None, metavar="PEM",
                       help="the CA that signs every node's certificate (the only one trusted between nodes)")
    serve.add_argument("--insecure-internal", action="store_true",
                       help="with --cluster on a non-loopback address and no --internal-tls-*: start in production "
                            "anyway (the network between the nodes is private and trusted); a warning still says so")


def _tail_command(sub: Any) -> None:
    tail = sub.add_parser("tail", help="stream live trace events of a worker run by `wrangler dev`")
    tail.add_argument("worker", nargs="?", help="worker name (default: the name in ./wrangler.toml)")
    tail.add_argument("--format", choices=["pretty", "json"], default=None,
                      help="pretty (default on a terminal) or json (one event per line)")
    tail.add_argument("--status", action="append", choices=["ok", "error", "canceled"], help="filter by outcome")
    tail.add_argument("--method", action="append", help="filter by HTTP method")
    tail.add_argument("--header", help="filter by header: NAME or NAME:VALUE")
    tail.add_argument("--search", help="only events whose console logs, request id or trace id contain this text")
    tail.add_argument("--ip", action="append", help="filter by client IP ('self' = this machine)")
    tail.add_argument("--sampling-rate", type=float, default=None, help="fraction of events to keep (0, 1]")
    tail.add_argument("--url", help="a tail API (a dev session's, or a production node's with CLOUDFLARE_API_TOKEN) "
                                    "instead of finding a dev session in the dev registry")
    tail.add_argument("-c", "--config", type=Path, default=None, help="take the worker name from this config")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "dev":
            from .dev import run_dev
            return event_loop.run(run_dev(args))
        if args.command == "serve":
            from .serve import run_serve
            return event_loop.run(run_serve(args))
        if args.command == "tail":
            from .tail import run_tail
            return event_loop.run(run_tail(args))
        if args.command == "d1":
            return asyncio.run(run_d1(args))
        from .secret import run_secret
        return run_secret(args)
    except (ConfigError, StartupRefused) as exc:
        print(f"✘ [ERROR] {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(f"✘ [ERROR] Address already in use ({exc.strerror}); is another `wrangler dev` running? "
                  f"Pick another with --port (0 = any free port).", file=sys.stderr)
            return 1
        raise
    except KeyboardInterrupt:
        return 130
