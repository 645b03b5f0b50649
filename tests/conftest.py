"""Shared fixtures: fixture workers, an in-process runtime, and real `wrangler dev` subprocesses."""
from __future__ import annotations

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
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        deadline = time.monotonic() + 60
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            match = re.match(r"^\s+(\S+)\s+(http://\S+)", line)
            if match:
                self.urls[match.group(1)] = match.group(2)
            if "Ready on" in line:
                self.ready_url = line.split("Ready on", 1)[1].strip()
                break
            if time.monotonic() > deadline:
                break
        if not self.ready_url:
            self.proc.kill()
            raise RuntimeError("wrangler dev did not start:\n" + "".join(self.stderr_lines))
        threading.Thread(target=self._drain_stdout, daemon=True).start()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def _drain_stdout(self) -> None:
        assert self.proc.stdout is not None
        for _ in self.proc.stdout:
            pass

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=30)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture
def dev_process(tmp_path: Path) -> Iterator[type[DevProcess]]:
    """Factory for `wrangler dev` subprocesses; all are stopped at the end of the test."""
    started: list[DevProcess] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def start(*args: str, cwd: Path = ROOT, extra_env: dict[str, str] | None = None) -> DevProcess:
        process = DevProcess(list(args), cwd, {**env, **(extra_env or {})})
        started.append(process)
        return process

    yield start  # type: ignore[misc]
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait(timeout=10)
