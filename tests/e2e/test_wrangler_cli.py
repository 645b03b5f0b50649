"""The real `wrangler` CLI in subprocesses: dev, tail with filters, kill -9 and restart."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.clients import Tail, http
from tests.conftest import COUNTER_TOML, PEER_TOML, ROOT

pytestmark = pytest.mark.slow


@pytest.fixture
def shop(dev_process, tmp_path: Path):
    return dev_process("--port", "0", "--persist-to", str(tmp_path / "state"))


def fx_args(tmp_path: Path) -> list[str]:
    return ["-c", str(COUNTER_TOML), "-c", str(PEER_TOML), "--port", "0", "--persist-to", str(tmp_path / "state"),
            "--alarm-backoff", "0.05"]


def test_dev_runs_all_four_and_answers_health_through_the_gateway_and_directly(shop, _isolated_registry) -> None:
    assert set(shop.urls) == {"rest-shop-api", "rest-shop-payments", "rest-shop-gateway", "rest-shop-images", "tail",
                              "mailbox", "metrics", "dashboard"}
    assert shop.urls["dashboard"] == shop.urls["tail"] + "/dashboard/"  # on the operator listener
    assert shop.ready_url == shop.urls["rest-shop-gateway"]
    for name in ("rest-shop-api", "rest-shop-payments", "rest-shop-gateway", "rest-shop-images"):
        status, body = http("GET", shop.urls[name] + "/health")
        assert status == 200 and body["service"] == name and body["status"] == "ok"
        assert {"status", "service", "environment", "timestamp", "version"} <= set(body)
    assert http("GET", shop.ready_url + "/api/health")[1]["service"] == "rest-shop-api"
    status, body = http("GET", shop.ready_url + "/api/no-such-route")
    assert status == 404 and body["error"]["code"] == "not_found"
    assert sorted(p.stem.split("@")[0] for p in _isolated_registry.glob("*.json")) == [
        "rest-shop-api", "rest-shop-gateway", "rest-shop-images", "rest-shop-payments"]
    assert shop.stop() == 0
    assert list(_isolated_registry.glob("*.json")) == []  # a clean Ctrl-C unregisters


def test_tail_sees_the_gateways_payment_route_reach_payments(shop) -> None:
    tail = Tail("rest-shop-payments", "--format", "json")
    try:
        tail.wait_connected()
        http("GET", shop.ready_url + "/api/payments/no/such/route?x=1", headers={"Authorization": "Bearer abc"})
        event = tail.next_event()
        assert event["scriptName"] == "rest-shop-payments"
        assert event["event"]["request"]["url"].endswith("/payments/no/such/route?x=1")
        assert event["event"]["request"]["headers"]["authorization"] == "REDACTED"
        assert event["event"]["response"]["status"] == 404
    finally:
        tail.close()


def test_tail_filters_status_search_and_method(dev_process, tmp_path: Path) -> None:
    dev = dev_process(*fx_args(tmp_path))
    errors = Tail("fx-counter", "--format", "json", "--status", "error")
    search = Tail("fx-counter", "--format", "json", "--search", "needle-42")
    posts = Tail("fx-counter", "--format", "json", "--method", "POST")
    try:
        for tail in (errors, search, posts):
            tail.wait_connected()
        url = dev.urls["fx-counter"]
        http("GET", url + "/log?marker=hay")
        http("GET", url + "/log?marker=needle-42")
        http("POST", url + "/incr/tail-test")
        http("GET", url + "/boom")
        assert errors.next_event()["event"]["request"]["url"].endswith("/boom")
        found = search.next_event()
        assert found["event"]["request"]["url"].endswith("marker=needle-42")
        assert ["printed needle-42"] in [log["message"] for log in found["logs"]]
        assert posts.next_event()["event"]["request"]["url"].endswith("/incr/tail-test")
        for tail in (errors, search, posts):  # nothing else matched
            assert tail.out.empty()
    finally:
        for tail in (errors, search, posts):
            tail.close()


def test_tail_pretty_format(dev_process, tmp_path: Path) -> None:
    dev = dev_process(*fx_args(tmp_path))
    tail = Tail("fx-counter", "--format", "pretty")
    try:
        tail.wait_connected()
        http("GET", dev.urls["fx-counter"] + "/log?marker=pretty", headers={"X-Request-Id": "pretty-1"})
        head = tail.out.get(timeout=30)
        assert head.startswith("GET http://") and "/log?marker=pretty - Ok (200) @ " in head
        assert head.rstrip().endswith("[pretty-1]")
        assert tail.out.get(timeout=30).strip() == "(log) printed pretty"
    finally:
        tail.close()


def test_tail_without_a_dev_session_says_so() -> None:
    result = subprocess.run([sys.executable, "-m", "wrangler", "tail", "rest-shop-api"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "No running `wrangler dev` session serves 'rest-shop-api'" in result.stderr


def test_invalid_config_is_a_clear_error(tmp_path: Path) -> None:
    """An unknown key: `wrangler dev` names it in a warning and goes on (as wrangler does),
    `wrangler serve` refuses it; a real problem stops both, in one clear line."""
    (tmp_path / "app.py").write_text("app = None\n")
    (tmp_path / "wrangler.toml").write_text('name = "x"\nmain = "app.py"\ncompatibility_date = "2026-01-01"\nport = 1\n')

    def run(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "wrangler", command, "-c", str(tmp_path / "wrangler.toml")],
                              capture_output=True, text=True, timeout=60)
    dev = run("dev")
    assert f"{tmp_path / 'wrangler.toml'}: unknown key port is ignored" in dev.stderr
    assert dev.returncode == 1 and "defines no fetch handler" in dev.stderr  # the next problem, named
    served = run("serve")
    assert served.returncode == 1 and f"{tmp_path / 'wrangler.toml'}: port: unknown key" in served.stderr
    assert "Traceback" not in dev.stderr + served.stderr


def test_object_state_survives_kill_9(dev_process, tmp_path: Path) -> None:
    dev = dev_process(*fx_args(tmp_path))
    url = dev.urls["fx-counter"]
    acknowledged = [http("POST", url + "/incr/durable")[1]["n"] for _ in range(30)]
    assert acknowledged == list(range(1, 31))
    dev.kill9()
    again = dev_process(*fx_args(tmp_path))
    assert http("GET", again.urls["fx-counter"] + "/count/durable") == (200, {"n": 30})


def test_due_alarm_fires_after_restart(dev_process, tmp_path: Path) -> None:
    dev = dev_process(*fx_args(tmp_path))
    status, body = http("POST", dev.urls["fx-counter"] + "/alarm/restart", {"delay_ms": 1000})
    assert status == 200
    dev.kill9()
    while time.time() * 1000 < body["at"]:  # let it fall due while nothing runs
        time.sleep(0.05)
    again = dev_process(*fx_args(tmp_path))
    deadline = time.monotonic() + 20
    state = {}
    while time.monotonic() < deadline:
        state = http("GET", again.urls["fx-counter"] + "/alarm/restart")[1]
        if state["runs"]:
            break
        time.sleep(0.05)
    assert state["runs"] == 1 and state["alarm"] is None
