"""A real Prometheus server (Debian's package, as `make test` installs it) with the config and
rules the project ships, against a `wrangler dev --nodes 2` session: it finds both nodes by
itself, stores what they count, and fires the database-unavailable alert when the shop's MongoDB
stops. Only the intervals are shortened (1 s instead of 15 s) to keep the run short."""
from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from bson import ObjectId

from tests.conftest import JWT_KEY
from tests.polling import eventually
from tests.net import free_port
from wrangler.embedded_mongo import EmbeddedMongo

ROOT = Path(__file__).resolve().parents[2]




@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The shipped ops/prometheus files, in a folder laid out as a checkout (the config finds the
    dev session's targets at ../../.wrangler/state/metrics/), intervals shortened."""
    work = tmp_path / "checkout"
    target = work / "ops" / "prometheus"
    shutil.copytree(ROOT / "ops" / "prometheus", target)
    config = target / "prometheus.yml"
    text = re.sub(r"(scrape_interval|evaluation_interval|refresh_interval): \d+s", r"\1: 1s", config.read_text())
    config.write_text(text)
    return work


@pytest.fixture
def shop_database(tmp_path: Path) -> Iterator[EmbeddedMongo]:
    """The shop's own MongoDB, which the test stops (the cluster's coordination stays up)."""
    server = EmbeddedMongo(tmp_path / "shop-mongo")
    server.start_sync()
    yield server
    server.stop()


@pytest.fixture
def prometheus(checkout: Path, tmp_path: Path) -> Iterator[str]:
    tool = shutil.which("prometheus")
    assert tool is not None, "prometheus is missing: `make test` installs it (apt-get install prometheus)"
    port = free_port()
    proc = subprocess.Popen([tool, f"--config.file={checkout / 'ops' / 'prometheus' / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def api(http: aiohttp.ClientSession, prometheus: str, path: str, **params: str) -> Any:
    async with http.get(f"{prometheus}/api/v1/{path}", params=params) as resp:
        body = await resp.json()
        assert resp.status == 200 and body["status"] == "success", body
        return body["data"]


async def test_prometheus_scrapes_both_nodes_and_fires_the_database_alert(
        dev_process: Any, checkout: Path, prometheus: str, shop_database: EmbeddedMongo, mongo_uri: str) -> None:
    db_name = f"t_{uuid.uuid4().hex[:12]}"
    process = dev_process("--nodes", "2", "--port", "0", "--persist-to", str(checkout / ".wrangler" / "state"),
                          "--lease", "3", "--cluster-db", f"{db_name}_cluster", "--var", f"MONGODB_DB:{db_name}",
                          "--var", "MONGODB_HEARTBEAT_MS:500",
                          extra_env={"MONGODB_URI": shop_database.uri, "DURABLE_CLUSTER_URI": mongo_uri,
                                     "JWT_KEY": JWT_KEY})
    gateways = [match.group(1) for line in process.banner
                if (match := re.match(r"^\s+node-\d+ rest-shop-gateway\s+(http://\S+)", line))]
    assert len(gateways) == 2
    async with aiohttp.ClientSession() as http:
        for gateway in gateways:  # errors and successes on both nodes
            for _ in range(3):
                async with http.get(f"{gateway}/api/products/{ObjectId()}") as resp:
                    assert resp.status == 404
            async with http.get(f"{gateway}/api/products") as resp:
                assert resp.status == 200

        async def both_nodes_up() -> bool:
            targets = (await api(http, prometheus, "targets"))["activeTargets"]
            return len(targets) == 2 and all(t["health"] == "up" for t in targets)
        assert await eventually(both_nodes_up, 30), await api(http, prometheus, "targets")
        assert {t["labels"]["node"] for t in (await api(http, prometheus, "targets"))["activeTargets"]} == \
            {"node-0", "node-1"}

        async def counted() -> float:
            result = (await api(http, prometheus, "query", query='sum(workers_requests_total{'
                                'worker="rest-shop-api",route="/products/<product_id>",status="4xx"})'))["result"]
            return float(result[0]["value"][1]) if result else 0.0
        assert await eventually(lambda: _equals(counted, 6.0), 30), await counted()

        async def database_up() -> bool:
            result = (await api(http, prometheus, "query", query='min(mongodb_up{worker="rest-shop-api"})'))["result"]
            return bool(result) and result[0]["value"][1] == "1"
        assert await eventually(database_up, 30)
        alerts = (await api(http, prometheus, "alerts"))["alerts"]
        assert not [a for a in alerts if a["labels"]["alertname"] == "DatabaseUnavailable"], alerts

        shop_database.stop()

        async def database_alert() -> list[Any]:
            return [a for a in (await api(http, prometheus, "alerts"))["alerts"]
                    if a["labels"]["alertname"] == "DatabaseUnavailable" and a["state"] in ("pending", "firing")]
        raised = await eventually(database_alert, 60)
        assert raised, await api(http, prometheus, "alerts")
        assert {a["labels"]["worker"] for a in raised} >= {"rest-shop-api"}


async def _equals(read: Any, expected: float) -> bool:
    return bool(await read() == expected)
