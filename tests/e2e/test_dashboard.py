"""The dashboard in a real browser (headless Chromium) against the shop on `wrangler dev --nodes 2`:
each view loads without console errors and shows the live system; a screenshot of each view is
kept in build/test-artifacts/dashboard-*.png."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
from bson import ObjectId
from pymongo import MongoClient
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.accounts import mint_token
from tests.browser import chromium, console_errors, screenshot
from tests.clients import http, logged_urls, serve_counter
from tests.conftest import JWT_KEY, UNLIMITED
from tests.polling import wait_until

LEASE_S = 3.0


def _node_urls(banner: list[str]) -> dict[int, dict[str, str]]:
    urls: dict[int, dict[str, str]] = {}
    for line in banner:
        match = re.match(r"^\s+node-(\d+) (\S+|tail API)\s+(http://\S+)", line)
        if match:
            urls.setdefault(int(match.group(1)), {})[match.group(2)] = match.group(3)
    return urls


@pytest.fixture
def shop(dev_process: Any, tmp_path: Path, mongo_uri: str) -> Iterator[dict[str, Any]]:
    db_name = f"t_{uuid.uuid4().hex[:12]}"
    db = MongoClient(mongo_uri)[db_name]
    process = dev_process("--nodes", "2", "--port", "0", "--persist-to", str(tmp_path / "state"),
                          "--lease", str(LEASE_S), "--cluster-db", f"{db_name}_cluster",
                          "--var", f"MONGODB_DB:{db_name}", "--var", f"RATE_LIMITS:{UNLIMITED}",
                          extra_env={"MONGODB_URI": mongo_uri, "JWT_KEY": JWT_KEY, "DURABLE_DASHBOARD_STEP_S": "1"})
    urls = _node_urls(process.banner)
    assert sorted(urls) == [0, 1] and all("dashboard" in u for u in urls.values()), process.banner
    for node in urls.values():  # a page of another site whose name points here (DNS rebinding) reads nothing
        for path in (node["dashboard"] + "api/overview", node["tail API"] + "/scripts"):
            assert requests.get(path, headers={"Host": "rebound.example"}, timeout=10).status_code == 403
    yield {"process": process, "urls": urls, "db": db,
           "admin": mint_token(db, JWT_KEY, "admin", str(ObjectId()), "admin@x"),
           "user": mint_token(db, JWT_KEY, "user", str(ObjectId()), "shopper@x")}
    MongoClient(mongo_uri).drop_database(db_name)
    MongoClient(mongo_uri).drop_database(f"{db_name}_cluster")


def _text(window: Any, css: str) -> str:
    """The text of everything `css` selects, read in one step (the page re-renders as it polls)."""
    return window.execute_script("return Array.from(document.querySelectorAll(arguments[0]), "
                                 "e => e.textContent).join(' ')", css)


def _attributes(window: Any, css: str, name: str) -> list[str]:
    return window.execute_script("return Array.from(document.querySelectorAll(arguments[0]), "
                                 "e => e.getAttribute(arguments[1]))", css, name)


def _show(window: Any, view: str) -> None:
    window.find_element(By.ID, f"tab-{view}").click()
    assert window.find_element(By.ID, f"view-{view}").is_displayed()


def _requests_shown(window: Any, worker: str) -> int:
    text = _text(window, f'article[data-worker="{worker}"] .requests')
    return int(text) if text.isdigit() else -1


def test_every_view_shows_the_live_shop(shop: dict[str, Any]) -> None:
    node0 = shop["urls"][0]
    with chromium() as window:
        window.get(node0["dashboard"])
        _workers_view(window, node0["rest-shop-gateway"])
        product_id = _objects_view(window, shop, node0["rest-shop-gateway"])
        window.get(node0["dashboard"])
        _tail_view(window, node0["rest-shop-gateway"], product_id)
        _cluster_view(window, shop["urls"][1])
        _show(window, "schedules")
        assert wait_until(lambda: "no cron triggers" in _text(window, "#crons tbody"), 10)  # the shop has none
        screenshot(window, "dashboard-schedules")
        assert console_errors(window) == []


def _workers_view(window: Any, gateway: str) -> None:
    """All four workers; the gateway's counter and chart rise with traffic sent now."""
    assert wait_until(lambda: len(_attributes(window, "#workers article", "data-worker")) == 4, 20), \
        _text(window, "#status")
    assert set(_attributes(window, "#workers article", "data-worker")) == \
        {"rest-shop-gateway", "rest-shop-api", "rest-shop-payments", "rest-shop-images"}
    before = _requests_shown(window, "rest-shop-gateway")
    for _ in range(25):
        assert http("GET", f"{gateway}/api/products?limit=1")[0] == 200
    assert wait_until(lambda: _requests_shown(window, "rest-shop-gateway") >= before + 25, 20), \
        (before, _requests_shown(window, "rest-shop-gateway"))

    def charted() -> bool:  # the gateway's requests/s chart has points, one of them above zero
        rps = _attributes(window, 'article[data-worker="rest-shop-gateway"] .chart polyline', "points")[:1]
        return bool(rps) and any(float(xy.split(",")[1]) < 30 for xy in rps[0].split())
    assert wait_until(charted, 10), _attributes(window, 'article[data-worker="rest-shop-gateway"] polyline', "points")
    assert _attributes(window, "#graph svg line", "x1"), "no bindings drawn"
    screenshot(window, "dashboard-workers")


def _objects_view(window: Any, shop: dict[str, Any], gateway: str) -> str:
    """An order's OrderLock, found by the order's id, shows the order it keeps."""
    status, product = http("POST", f"{gateway}/api/products", {"name": "Dashboard lamp", "price": 4.5, "stock": 9},
                           {"Authorization": f"Bearer {shop['admin']}"})
    assert status == 201, product
    status, placed = http("POST", f"{gateway}/api/orders", {"productId": product["_id"], "quantity": 2},
                          {"Authorization": f"Bearer {shop['user']}"})
    assert status == 201, placed
    order_id = placed["createdOrder"]["_id"]
    # the node the order's OrderLock runs on: its invocations are that node's trace events
    query = {"worker": "rest-shop-api", "class": "OrderLock", "key": order_id}
    owner = next(urls for urls in shop["urls"].values()
                 if requests.get(urls["dashboard"] + "api/object", params=query, timeout=10).json()["live"])
    window.get(owner["dashboard"])
    _show(window, "objects")
    assert wait_until(lambda: "rest-shop-api.OrderLock" in _text(window, "#find-class"), 10)
    Select(window.find_element(By.ID, "find-class")).select_by_value("rest-shop-api.OrderLock")
    window.find_element(By.ID, "find-key").send_keys(order_id)
    window.find_element(By.CSS_SELECTOR, "#find button[type=submit]").click()
    assert wait_until(lambda: order_id in _text(window, "#object .keys") and "pending" in _text(window, "#object .keys"),
                      10), _text(window, "#object")
    window.find_element(By.XPATH, "//button[text()='Watch invocations']").click()
    assert wait_until(lambda: "Watching" in _text(window, "#object button"), 10)
    status, cancelled = http("POST", f"{gateway}/api/orders/{order_id}/cancel", None,
                             {"Authorization": f"Bearer {shop['user']}"})
    assert status == 200, cancelled
    assert wait_until(lambda: "OrderLock.cancel()" in _text(window, "#object .invocations"), 10), \
        _text(window, "#object")
    screenshot(window, "dashboard-objects")
    return product["_id"]


def _tail_view(window: Any, gateway: str, product_id: str) -> None:
    """A request sent now shows; a click on it shows its whole trace (gateway and base)."""
    _show(window, "tail")
    window.find_element(By.ID, "tail-start").click()
    assert wait_until(lambda: "tailing" in _text(window, "#status"), 10), _text(window, "#status")
    sent = iter(range(1000))

    def seen() -> Any:  # a new query each time: the edge cache must not answer it without base
        http("GET", f"{gateway}/api/products/{product_id}?tail={next(sent)}")
        return [e for e in window.find_elements(By.CSS_SELECTOR, "#tail-events li button")
                if "rest-shop-gateway" in e.text and product_id in e.text]
    events = wait_until(seen, 20, interval=0.5)
    assert events, _text(window, "#tail-events")
    events[0].click()
    assert wait_until(lambda: "rest-shop-api" in _text(window, "#tail-trace summary")
                      and "rest-shop-gateway" in _text(window, "#tail-trace summary"), 10), _text(window, "#tail-trace")
    screenshot(window, "dashboard-tail")
    window.find_element(By.ID, "tail-stop").click()


def _cluster_view(window: Any, node1: dict[str, str]) -> None:
    """Both nodes; then node-1 leaves and node-0 is placed every shard."""
    _show(window, "cluster")
    assert wait_until(lambda: len(_attributes(window, "#members tr[data-node]", "data-node")) == 2, 20), \
        _text(window, "#cluster")
    placed_before = int(_text(window, '#members tr[data-node="node-0"] .placed'))
    screenshot(window, "dashboard-cluster")
    _, health = http("GET", f"{node1['rest-shop-gateway']}/api/health")
    os.kill(health["node"]["pid"], signal.SIGTERM)

    def node_1_gone() -> bool:
        placed = _text(window, '#members tr[data-node="node-0"] .placed')
        return _attributes(window, "#members tr[data-node]", "data-node") == ["node-0"] and placed.isdigit() \
            and int(placed) > placed_before
    assert wait_until(node_1_gone, 30), _text(window, "#cluster")
    screenshot(window, "dashboard-cluster-after-leave")


DASHBOARD_TOKEN = "d" * 40


def _serve_counter(tmp_path: Path, token: str | None) -> subprocess.Popen[str]:
    return serve_counter(tmp_path, "--dashboard-port", "0", token_var="DASHBOARD_TOKEN", token=token)


def test_a_production_dashboard_needs_its_token(tmp_path: Path) -> None:
    weak = _serve_counter(tmp_path, "short")
    assert weak.wait(timeout=60) != 0 and "DASHBOARD_TOKEN" in weak.stderr.read()  # type: ignore[union-attr]
    proc = _serve_counter(tmp_path, DASHBOARD_TOKEN)
    try:
        urls = logged_urls(proc, {"worker": ("ready", "url"), "dashboard": ("dashboard_ready", "dashboard_url")})
        board = urls["dashboard"]
        assert requests.get(urls["worker"] + "/dashboard/", timeout=10).status_code == 404  # not on the public port
        assert requests.get(board + "api/overview", timeout=10).status_code == 401
        assert requests.get(board + "?token=" + "x" * 40, timeout=10, allow_redirects=False).status_code == 401
        signed_in = requests.get(board + "?token=" + DASHBOARD_TOKEN, timeout=10, allow_redirects=False)
        assert signed_in.status_code == 303 and signed_in.headers["Location"] == "/dashboard/"
        cookie = signed_in.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard" in cookie
        overview = requests.get(board + "api/overview", cookies=signed_in.cookies, timeout=10)
        assert overview.status_code == 200 and [w["name"] for w in overview.json()["workers"]] == ["fx-counter"]
        assert "default-src 'self'" in overview.headers["Content-Security-Policy"]
        # a script, by a name the operator's network gives the node (no local-Host rule behind a token)
        by_name = requests.get(board + "api/overview", headers={"Authorization": f"Bearer {DASHBOARD_TOKEN}",
                                                                "Host": "node-1.internal"}, timeout=10)
        assert by_name.status_code == 200
        asyncio.run(_tail_through_the_dashboard(board, urls["worker"]))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def _tail_through_the_dashboard(board: str, worker: str) -> None:
    """The tail view's path in production: tails opened and read behind the dashboard's token."""
    auth = {"Authorization": f"Bearer {DASHBOARD_TOKEN}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(board + "api/tails", json={"status": ["ok"]}) as refused:
            assert refused.status == 401
        async with session.post(board + "api/tails", json={"status": ["ok"]}, headers=auth) as opened:
            tails = (await opened.json())["tails"]
        url = board.removesuffix("/dashboard/") + tails[0]["path"]
        async with session.get(url) as without_token:
            assert without_token.status == 401
        async with session.get(url, headers=auth) as plain_get:  # not a WebSocket: must not use the tail up
            assert plain_get.status == 400
        async with session.ws_connect(url, protocols=("trace-v1",), headers=auth) as ws:
            await ws.send_str(json.dumps({"debug": False}))
            async with session.post(worker + "/incr/dashboard-tail") as incr:
                assert incr.status == 200
            events = [json.loads((await ws.receive(timeout=10)).data)]
            while "request" not in events[-1]["event"]:  # the counter object's own event may come first
                events.append(json.loads((await ws.receive(timeout=10)).data))
            assert events[-1]["scriptName"] == "fx-counter"
            assert "/incr/dashboard-tail" in events[-1]["event"]["request"]["url"], events
