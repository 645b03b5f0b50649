"""The shop on three namespaced hosts (tests/netns.py), its database on a fourth, clients on a
fifth: what the network-fault tests run against, and what `make lab` starts for people to poke at.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from bson import ObjectId
from pymongo import MongoClient

from tests.accounts import mint_token
from tests.conftest import ROOT, UNLIMITED
from tests.netns import Host, Lab
from wrangler.embedded_mongo import EmbeddedMongo

LEASE_S = 3.0
PORT = 8787
JWT_KEY = "lab-jwt-key-" + "j" * 40
SERVICE_KEY = "lab-service-key-" + "s" * 40
SHOPPERS = 8
STOCK = 1_000_000
RECOVERY_S = 5  # an order cut mid-way is finished or undone by its alarm this long after it began


@dataclass
class LabShop:
    lab: Lab
    client: Host
    database: Host
    hosts: list[Host]
    uri: str
    db_name: str
    state: Path
    admin: str = ""
    tokens: list[str] = field(default_factory=list)
    holds: list[str] = field(default_factory=list)  # the unpaid orders' holds, as last read

    def gateway(self, host: Host) -> str:
        return f"http://{host.ip}:{PORT}"

    def env_file(self, host: Host) -> Path:
        return self.state / f"{host.name}.env"

    def deploy(self, host: Host, version: str) -> None:
        """A new version on `host`: the env file names it, SIGHUP rolls the host's workers onto it."""
        self.env_file(host).write_text(f"DURABLE_VERSION={version}\n")
        os.kill(host.processes[-1].pid, signal.SIGHUP)

    async def versions(self, http: aiohttp.ClientSession, host: Host) -> list[str]:
        """The versions of the worker processes on `host`, as the members of the cluster show them."""
        try:
            async with http.get(f"{self.gateway(self.hosts[0])}/api/health",
                                timeout=aiohttp.ClientTimeout(total=5)) as resp:
                health = await resp.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError):  # busy: ask again
            return []
        members = health.get("node", {}).get("members", []) if isinstance(health, dict) else []
        return sorted(m["version"] for m in members if any(f"//{host.ip}:" in url for url in m["urls"].values()))

    def start(self, host: Host) -> None:
        """The shop's three workers on `host`, one cluster node each, as an operator runs them."""
        log = open(self.state / f"{host.name}.log", "ab")
        if not self.env_file(host).exists():
            self.env_file(host).write_text("DURABLE_VERSION=v1\n")
        host.popen([sys.executable, "-m", "wrangler", "serve", "--cluster", "--env", "production",
                    "--insecure-internal",  # the lab's links are namespaces of this machine (TLS: test_production)
                    "--env-file", str(self.env_file(host)),
                    "--ip", host.ip, "--port", str(PORT), "--persist-to", str(self.state / host.name),
                    "--lease", str(LEASE_S), "--cluster-db", f"{self.db_name}_cluster",
                    "--log-format", "json",
                    "--var", f"MONGODB_DB:{self.db_name}", "--var", f"RATE_LIMITS:{UNLIMITED}",
                    "--var", "MAX_UNPAID_ORDERS:100000", "--var", "MAX_UNPAID_UNITS:1000000",
                    "--var", f"ORDER_RECOVERY_S:{RECOVERY_S}",
                    "--var", "PUBLIC_BASE_URL:https://shop.example", "--var", "MAIL_FROM:Shop <shop@shop.example>",
                    "--var", "PAYMENT_PROVIDERS:stripe", "--var", "STRIPE_API_BASE:http://127.0.0.1:9"],
                   cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                   env={**{k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "MONGODB_"))},
                        "MONGODB_URI": self.uri, "JWT_KEY": JWT_KEY, "SERVICE_AUTH_KEY": SERVICE_KEY,
                        "SMTP_URL": "smtp://127.0.0.1:25", "STRIPE_SECRET_KEY": "sk_test_" + "k" * 24,
                        "STRIPE_WEBHOOK_SECRET": "whsec_" + "w" * 32, "PYTHONUNBUFFERED": "1"})

    async def members(self, http: aiohttp.ClientSession, host: Host) -> int:
        """How many hosts' base nodes the base node behind `host`'s gateway counts (0 while it
        does not answer; every worker process is a node, on each host one per worker)."""
        try:
            async with http.get(f"{self.gateway(host)}/api/health", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                members = (await resp.json(content_type=None))["node"]["members"]
                return len({m["urls"]["rest-shop-api"] for m in members if "rest-shop-api" in m["urls"]})
        except (aiohttp.ClientError, asyncio.TimeoutError, KeyError, TypeError):
            return 0

    async def settled(self, http: aiohttp.ClientSession, timeout_s: float = 60) -> float:
        """Wait until every host's gateway answers and counts all three; the seconds it took."""
        began = time.monotonic()
        while [await self.members(http, host) for host in self.hosts] != [3, 3, 3]:
            assert time.monotonic() - began < timeout_s, "the cluster did not settle: see the hosts' logs"
            await asyncio.sleep(0.2)
        return time.monotonic() - began

    async def product(self, http: aiohttp.ClientSession, name: str) -> str:
        async with http.post(f"{self.gateway(self.hosts[0])}/api/products",
                             json={"name": name, "price": 10, "stock": STOCK},
                             headers={"Authorization": f"Bearer {self.admin}"}) as resp:
            assert resp.status == 201, await resp.text()
            return str((await resp.json())["_id"])

    async def stock(self, http: aiohttp.ClientSession, product_id: str) -> int:
        async with http.get(f"{self.gateway(self.hosts[0])}/api/products/{product_id}/stock",
                            headers={"Authorization": f"Bearer {self.admin}"}) as resp:
            assert resp.status == 200, await resp.text()
            levels = await resp.json()
            self.holds = [h["orderId"] for h in levels["holds"]]
            return int(levels["stock"])

    def db(self) -> Any:
        return MongoClient(self.uri)[self.db_name]


@contextmanager
def lab_shop(state: Path) -> Iterator[LabShop]:
    """Build the lab and start the shop on every host (not waiting for it to settle)."""
    lab = Lab()
    mongo: EmbeddedMongo | None = None
    try:
        client, database = lab.add("client", 100), lab.add("db", 2)
        hosts = [lab.add(f"h{i}", 10 + i) for i in (1, 2, 3)]
        mongo = EmbeddedMongo(state / "mongo", host=database.ip, port=27017,
                              launcher=["ip", "netns", "exec", database.namespace])
        mongo.spawn()  # from this thread: the server dies with the thread that started it
        uri = lab.run(client, mongo.ready)
        started = LabShop(lab, client, database, hosts, uri, f"lab_{uuid.uuid4().hex[:10]}", state)

        async def accounts() -> None:
            db = started.db()
            started.admin = mint_token(db, JWT_KEY, "admin", str(ObjectId()), "admin@lab")
            started.tokens = [mint_token(db, JWT_KEY, "user", str(ObjectId()), f"s{i}@lab") for i in range(SHOPPERS)]

        lab.run(client, accounts)
        for host in hosts:
            started.start(host)
        yield started
    finally:
        lab.close()
        if mongo is not None:
            mongo.stop()


def main() -> None:
    """`make lab`: the namespaced cluster, up until Ctrl-C, for poking at by hand."""
    import tempfile

    state = Path(tempfile.mkdtemp(prefix="rest-shop-lab-"))
    with lab_shop(state) as shop:
        async def settle() -> None:
            async with aiohttp.ClientSession() as http:
                await shop.settled(http, timeout_s=120)
        shop.lab.run(shop.client, settle)
        h1 = shop.hosts[0]
        print(f"Lab up; logs and data in {state}\n"
              f"  database  {shop.uri}  (namespace {shop.database.namespace})\n"
              + "".join(f"  {h.name:<9} {shop.gateway(h)}  (namespace {h.namespace})\n" for h in shop.hosts)
              + f"  clients   namespace {shop.client.namespace}\n\n"
              f"  ip netns exec {shop.client.namespace} curl -s {shop.gateway(h1)}/api/health\n"
              f"  admin token: {shop.admin}\n"
              f"Faults by hand (see tests/netns.py): a silent cut of h3 from h1 is\n"
              f"  ip -n {shop.hosts[2].namespace} neigh replace {h1.ip} lladdr 02:00:00:de:ad:01 dev eth0 nud permanent\n"
              f"Ctrl-C stops it all.", flush=True)
        try:
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
