"""The HTTP server under every worker, and Cloudflare's own runtime on the same box.

- `hello_server`: one Quart hello-world on hypercorn (the server before) and on ours (uvicorn +
  httptools, durable/server.py), on asyncio's loop and on uvloop, each in a process of its own.
- `versus_workerd`: our `wrangler dev` against Cloudflare's runtime from npm, workerd alone on
  its own socket and behind `npx wrangler dev`, on a JSON hello and on a one-object counter (the
  same worker in JS, bench/workers/workerd_js; ours on the Python Workers API, and in Quart).

The load is wrk's (apt's `wrk`, which `make bench` installs when root), in its own process; the
contenders run in alternating rounds, so a noisy moment hurts each alike.
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.clients import cloudflare_wrangler
from tests.net import free_port

ROOT = Path(__file__).resolve().parent.parent
JS_WORKER = ROOT / "bench" / "workers" / "workerd_js"
SERVERS = (("hypercorn", "asyncio"), ("ours", "asyncio"), ("ours", "uvloop"))
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


async def wrk(url: str, seconds: float, method: str = "GET", connections: int = 32,
              script: Path | None = None) -> dict[str, Any]:
    """One wrk run (`script`: a Lua file making the requests): requests per second, p99 latency
    (ms), and the requests that failed (errors, and answers other than 2xx/3xx)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as method_script:
        method_script.write(f'wrk.method = "{method}"\n')
        method_script.flush()
        proc = await asyncio.create_subprocess_exec(
            "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script or method_script.name),
            url, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = (await proc.communicate())[0].decode()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    if rps is None or p99 is None:
        raise RuntimeError(f"wrk said: {out}")
    failed = sum(int(n) for n in re.findall(r"(?:Non-2xx or 3xx responses|connect|read|write|timeout)\s*:?\s+(\d+)", out))
    return {"rps": float(rps.group(1)), "p99_ms": float(p99.group(1)) * UNITS[p99.group(2)], "failed": failed}


async def rounds(contenders: dict[str, Callable[[float], Any]], n: int, seconds: float) -> dict[str, Any]:
    """Each contender measured `n` times, in turn; its median rps and p99, its failures summed."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    for _ in range(n):
        for name, measure in contenders.items():
            await measure(min(1.0, seconds))  # warm-up
            runs[name].append(await measure(seconds))
    return {name: {"rps_rounds": [round(r["rps"]) for r in rs], "rps": round(statistics.median(r["rps"] for r in rs)),
                   "p99_ms": round(statistics.median(r["p99_ms"] for r in rs), 2),
                   "failed": sum(r["failed"] for r in rs)} for name, rs in runs.items()}


class Process:
    """A server in a subprocess; its output goes to a file, read until `ready` shows `url_pattern`."""

    def __init__(self, command: list[str], url_pattern: str, cwd: Path = ROOT, env: dict[str, str] | None = None,
                 timeout_s: float = 120, ready_url: str | None = None) -> None:
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log")  # noqa: SIM115 (closed by stop())
        self.proc = subprocess.Popen(command, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, text=True)
        self.urls: list[str] = []
        deadline = time.monotonic() + timeout_s
        while not self.urls:
            self.urls = [ready_url] if ready_url and _answers(ready_url) else []
            self.urls = self.urls or ([] if ready_url else re.findall(url_pattern, Path(self.log.name).read_text()))
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{command[:3]} did not start: {Path(self.log.name).read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


async def bench_hello_server(n: int, seconds: float) -> dict[str, Any]:
    servers = {f"{server}+{loop}": Process([sys.executable, "-m", "bench.hello_server", server, loop],
                                           r"http://127\.0\.0\.1:\d+") for server, loop in SERVERS}
    try:
        result = await rounds({name: (lambda s, url=p.urls[0]: wrk(url + "/hello", s))
                               for name, p in servers.items()}, n, seconds)
    finally:
        for process in servers.values():
            process.stop()
    baseline = result["hypercorn+asyncio"]["rps"]
    for figures in result.values():
        figures["ratio_to_hypercorn"] = round(figures["rps"] / baseline, 2)
    return {**result, "target_ratio": 2.0}


def _npm_wrangler() -> Path | str:
    """Cloudflare's wrangler 4 from npm (the tests' cached install), or why it cannot be had."""
    try:
        return cloudflare_wrangler()
    except (RuntimeError, subprocess.SubprocessError) as exc:
        return f"no Cloudflare wrangler from npm: {exc}"


def _workerd_config(project: Path, state: Path, port: int) -> Path:
    """workerd's own config for the JS worker: one socket, its Durable Objects on SQLite on disk."""
    state.mkdir(parents=True, exist_ok=True)
    config = project / "config.capnp"
    config.write_text(f"""using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [(name = "main", worker = .worker), (name = "disk", disk = (path = "{state}", writable = true))],
  sockets = [(name = "http", address = "127.0.0.1:{port}", http = (), service = "main")],
);
const worker :Workerd.Worker = (
  modules = [(name = "index.js", esModule = embed "src/index.js")],
  compatibilityDate = "2025-09-01",
  durableObjectNamespaces = [(className = "Counter", uniqueKey = "bench-counter", enableSql = true)],
  durableObjectStorage = (localDisk = "disk"),
  bindings = [(name = "COUNTER", durableObjectNamespace = "Counter")],
);
""")
    return config


async def bench_workerd(n: int, seconds: float) -> dict[str, Any]:
    """Ours (`wrangler dev`) against workerd alone (its own socket) and behind `npx wrangler dev`."""
    wrangler_js = _npm_wrangler()
    if isinstance(wrangler_js, str):
        return {"skipped": wrangler_js}
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "js"
        shutil.copytree(JS_WORKER, project)
        port = free_port()
        config = _workerd_config(project, Path(tmp) / "workerd-state", port)
        processes = [Process([str(wrangler_js.parent / "workerd"), "serve", str(config), "--experimental",
                              "--verbose"], "", cwd=project, ready_url=f"http://127.0.0.1:{port}/hello"),
                     Process([str(wrangler_js), "dev", "--ip", "127.0.0.1", "--port", str(free_port()),
                              "--persist-to", str(Path(tmp) / "js-state")], r"Ready on (http://127\.0\.0\.1:\d+)",
                             cwd=project, env={"CI": "true", "WRANGLER_SEND_METRICS": "false"}),
                     Process([sys.executable, "-m", "wrangler", "dev", "-c", "bench/workers/workers_api/wrangler.jsonc",
                              "-c", "bench/workers/hello/wrangler.toml", "-c", "bench/workers/bench_do/wrangler.toml",
                              "--port", "0", "--no-dashboard", "--persist-to", str(Path(tmp) / "py-state")],
                             r"bench-[\w-]+\s+(http://\S+)")]
        try:
            await asyncio.sleep(1)  # all have answered or printed their URLs; let the rest of their start-up settle
            ours = processes[2].urls  # the Workers-API twin, then Quart's hello and counter
            urls = {"ours": [ours[0]] * 2, "ours_quart": ours[1:3], "workerd": [f"http://127.0.0.1:{port}"] * 2,
                    "npx_wrangler_dev": processes[1].urls * 2}
            return await _versus(urls, n, seconds)
        finally:
            for process in processes:
                process.stop()


async def _versus(urls: dict[str, list[str]], n: int, seconds: float) -> dict[str, Any]:
    """`urls[name]`: where its hello and its counter answer. `ours` is the like-for-like twin (the
    Python Workers API, bench/workers/workers_api); `ours_quart` the same two routes in Quart."""
    hello = await rounds({name: (lambda s, u=u[0]: wrk(u + "/hello", s)) for name, u in urls.items()}, n, seconds)
    counter = await rounds({name: (lambda s, u=u[1]: wrk(u + "/incr/hot", s, "POST")) for name, u in urls.items()},
                           n, seconds)
    for result, target in ((hello, 1.0), (counter, 2.0)):
        result["ratio_to_workerd"] = round(result["ours"]["rps"] / result["workerd"]["rps"], 2)
        result["quart_ratio_to_workerd"] = round(result["ours_quart"]["rps"] / result["workerd"]["rps"], 2)
        result["ratio_to_npx_wrangler_dev"] = round(result["ours"]["rps"] / result["npx_wrangler_dev"]["rps"], 2)
        result["target_to_workerd"] = target
    return {"hello": hello, "hot_object": counter}


async def bench_server(quick: bool) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed (apt-get install wrk; `make bench` does it when root)"}
    n, seconds = (1, 2.0) if quick else (3, 5.0)
    return {"hello_server": await bench_hello_server(n, seconds), "versus_workerd": await bench_workerd(n, seconds)}
