"""The embedded database never outlives `wrangler dev`, even when it is killed with -9."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _server_pids(storage: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "secantusd-py" in cmdline and str(storage) in cmdline:
                pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")
def test_embedded_database_dies_with_a_killed_dev_session(dev_process, tmp_path: Path) -> None:
    dev = dev_process("--port", "0", "--persist-to", str(tmp_path / "state"), extra_env={"MONGODB_URI": None})
    storage = tmp_path / "state" / "mongo"
    assert len(_server_pids(storage)) == 1
    dev.kill9()
    deadline = time.monotonic() + 20
    while _server_pids(storage) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _server_pids(storage) == []
