"""Tails as on Cloudflare: Cloudflare's own `wrangler` CLI (npm, pinned major version) attaches to a
dev session and to a production node unchanged; production tails need a strong token; concurrent
dev sessions keep their registry entries apart."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.clients import Tail, cloudflare_wrangler, http, logged_urls, serve_counter
from tests.conftest import COUNTER_TOML, PEER_TOML, ROOT

pytestmark = pytest.mark.slow

TOKEN = "t" * 40


@pytest.fixture(scope="session", name="cloudflare_wrangler")
def cloudflare_wrangler_fixture() -> Path:
    return cloudflare_wrangler()


class CloudflareTail:
    """Cloudflare's `wrangler tail` pointed at our tail API; its output (pretty or indented JSON)
    is collected so tests can wait for what they expect, with a deadline."""

    def __init__(self, binary: Path, api: str, token: str, name: str, *args: str, cwd: Path) -> None:
        env = {**os.environ, "CLOUDFLARE_API_BASE_URL": api, "CLOUDFLARE_API_TOKEN": token,
               "CLOUDFLARE_ACCOUNT_ID": "local", "WRANGLER_SEND_METRICS": "false", "NO_COLOR": "1", "CI": "true"}
        self.proc = subprocess.Popen([str(binary), "tail", name, *args], cwd=cwd, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.output = ""
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.output += line
                self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 60) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: text in self.output or self.proc.poll() is not None, timeout):
                raise AssertionError(f"{text!r} not printed:\n{self.output}")
        assert text in self.output, self.output

    def events(self) -> list[dict[str, Any]]:
        """The JSON events printed so far (the CLI indents them over several lines)."""
        decoder, found, at = json.JSONDecoder(), [], 0
        text = self.output
        while (start := text.find("{", at)) != -1:
            try:
                value, at = decoder.raw_decode(text, start)
            except ValueError:
                at = start + 1
                continue
            if isinstance(value, dict) and "scriptName" in value:
                found.append(value)
        return found

    def close(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout=10)


def wait_for_tails(api: str, count: int, token: str | None = None) -> None:
    """Until the tail API holds `count` tails of fx-counter (their WebSockets are being opened):
    in JSON mode Cloudflare's CLI prints nothing until the first event."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + 60
    while len(http("GET", f"{api}/accounts/local/workers/scripts/fx-counter/tails", headers=headers)[1]["result"]) < count:
        assert time.monotonic() < deadline, "the CLI never created its tail"
        time.sleep(0.05)


def test_cloudflare_wrangler_tails_a_dev_session(cloudflare_wrangler: Path, dev_process, tmp_path: Path) -> None:
    dev = dev_process("-c", str(COUNTER_TOML), "-c", str(PEER_TOML), "--port", "0", "--persist-to",
                      str(tmp_path / "state"))
    json_tail = CloudflareTail(cloudflare_wrangler, dev.urls["tail"], "x", "fx-counter", "--format", "json",
                               "--method", "POST", "--ip", "self", cwd=tmp_path)
    searching = CloudflareTail(cloudflare_wrangler, dev.urls["tail"], "x", "fx-counter", "--format", "json",
                               "--search", "cf-req-wanted", cwd=tmp_path)
    pretty = CloudflareTail(cloudflare_wrangler, dev.urls["tail"], "x", "fx-counter", "--format", "pretty",
                            "--status", "ok", "--header", "x-probe:yes", "--sampling-rate", "0.99", cwd=tmp_path)
    try:
        wait_for_tails(dev.urls["tail"], 3)
        pretty.wait_for("Connected to fx-counter")
        for _ in range(3):  # `pretty` samples 99%: one event in 100 is dropped by design, three in a row
            # essentially never (1e-6), so at least one reaches it
            assert http("POST", dev.ready_url + "/incr/cf-json", headers={"X-Probe": "yes"})[0] == 200
        assert http("POST", dev.ready_url + "/incr/cf-search", headers={"X-Request-Id": "cf-req-wanted"})[0] == 200
        assert http("GET", dev.ready_url + "/get/cf-json")[0] in (200, 404)  # a GET: filtered out of json_tail
        json_tail.wait_for('"url": "' + dev.ready_url + '/incr/cf-json"')
        events = [e for e in json_tail.events() if "request" in e["event"]]
        assert {e["event"]["request"]["method"] for e in events} == {"POST"}  # the GET was filtered out
        first = events[0]
        assert first["event"]["request"]["url"].endswith("/incr/cf-json")
        assert first["scriptName"] == "fx-counter" and first["outcome"] == "ok"
        assert first["event"]["response"]["status"] == 200 and first["requestId"]
        pretty.wait_for(f"POST {dev.ready_url}/incr/cf-json - Ok")
        assert "/get/cf-json" not in pretty.output  # no X-Probe header: filtered out
        searching.wait_for('"url": "' + dev.ready_url + '/incr/cf-search"')  # --search matches the request id
        assert all(e["requestId"] == "cf-req-wanted" for e in searching.events())
    finally:
        for tail in (json_tail, pretty, searching):
            tail.close()


def _serve(tmp_path: Path, tail_port: str, token: str | None) -> subprocess.Popen[str]:
    return serve_counter(tmp_path, "--tail-port", tail_port, token_var="TAIL_TOKEN", token=token)


def _started(proc: subprocess.Popen[str]) -> dict[str, str]:
    """The worker's and the tail API's URLs."""
    return logged_urls(proc, {"worker": ("ready", "url"), "tail": ("tail_ready", "tail_url")})


def test_production_tail_needs_its_token_and_serves_cloudflare_s_cli(cloudflare_wrangler: Path,
                                                                      tmp_path: Path) -> None:
    proc = _serve(tmp_path, "0", TOKEN)
    try:
        urls = _started(proc)
        tails = f"{urls['tail']}/accounts/local/workers/scripts/fx-counter/tails"
        assert http("POST", tails, {})[0] == 401
        status, body = http("POST", tails, {}, headers={"Authorization": "Bearer " + "w" * 40})
        assert status == 403 and body["success"] is False and body["errors"][0]["code"] == 10000
        wrong = CloudflareTail(cloudflare_wrangler, urls["tail"], "w" * 40, "fx-counter", "--format", "json",
                               cwd=tmp_path)
        assert wrong.close() != 0 or "Connected" not in wrong.output
        status, listed = http("GET", tails, headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and listed["result"] == []  # refused calls created no tail

        ours = Tail("fx-counter", "--url", urls["tail"], "--format", "json", env={"CLOUDFLARE_API_TOKEN": TOKEN})
        theirs = CloudflareTail(cloudflare_wrangler, urls["tail"], TOKEN, "fx-counter", "--format", "json",
                                cwd=tmp_path)
        try:
            ours.wait_connected()
            wait_for_tails(urls["tail"], 2, TOKEN)
            assert http("POST", urls["worker"] + "/incr/prod-tail",
                        headers={"Authorization": "Bearer secret-value"})[0] == 200
            event = ours.next_event()
            while "request" not in event["event"]:
                event = ours.next_event()
            assert event["event"]["request"]["url"].endswith("/incr/prod-tail")
            assert event["event"]["request"]["headers"]["authorization"] == "REDACTED"
            theirs.wait_for("/incr/prod-tail")
            assert TOKEN not in theirs.output and "secret-value" not in theirs.output
        finally:
            ours.close()
            theirs.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.parametrize("token", [None, "short"])
def test_production_refuses_a_tail_without_a_strong_token(tmp_path: Path, token: str | None) -> None:
    proc = _serve(tmp_path, "0", token)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "TAIL_TOKEN is missing or shorter than 32 bytes" in err and "Traceback" not in err


def test_two_dev_sessions_of_one_worker_keep_their_entries(dev_process, tmp_path: Path, _isolated_registry) -> None:
    first = dev_process("-c", str(COUNTER_TOML), "-c", str(PEER_TOML), "--port", "0", "--persist-to",
                        str(tmp_path / "one"))
    second = dev_process("-c", str(COUNTER_TOML), "-c", str(PEER_TOML), "--port", "0", "--persist-to",
                         str(tmp_path / "two"))
    assert len(list(_isolated_registry.glob("fx-counter@*.json"))) == 2
    ambiguous = subprocess.run([sys.executable, "-m", "wrangler", "tail", "fx-counter"], cwd=ROOT, text=True,
                               capture_output=True, timeout=30)
    assert ambiguous.returncode == 1 and "2 running sessions serve 'fx-counter'" in ambiguous.stderr
    assert first.urls["tail"] in ambiguous.stderr and second.urls["tail"] in ambiguous.stderr
    assert second.stop() == 0
    assert [p.name for p in _isolated_registry.glob("fx-counter@*.json")] == [f"fx-counter@{first.proc.pid}.json"]
    tail = Tail("fx-counter", "--format", "json", "--method", "POST")  # one left: found without --url
    try:
        tail.wait_connected()
        assert http("POST", first.ready_url + "/incr/left")[0] == 200
        assert tail.next_event()["event"]["request"]["url"].endswith("/incr/left")
    finally:
        tail.close()
