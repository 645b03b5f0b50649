"""The cluster on a real network, with the faults real networks have.

Three hosts (network namespaces joined by a bridge), each running the shop with
`wrangler serve --cluster --env production --ip <its address>`, the database on a fourth, the
shoppers on a fifth. Each fault is injected under load, then healed, and the checks are
Jepsen's kind: every acknowledged order stored, the stock exactly what the stored orders left,
no answer a client should not see (a 5xx other than a 503 with Retry-After, or none at all)
through the hosts that stayed whole, and how long clients saw failures (printed: the README's
failure table quotes these lines).
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.lab_shop import LEASE_S, STOCK, LabShop, lab_shop
from tests.netns import Host, unavailable
from tests.shop_load import ShopLoad, check_stock

WHY_NOT = unavailable()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=f"no network namespaces here: {WHY_NOT}")
# a rolling deploy's bounds, set from runs with both cores busy (0.8 % and 1.0 % answered 503, the
# longest answer 5.8 and 5.6 s; unloaded 0.46 %, 3.2 s); the code before drains and bounded moves
# gave 5.7 % and 26 s
ROLL_UNAVAILABLE_SHARE = 0.03
ROLL_LONGEST_S = 10.0

@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabShop]:
    with lab_shop(tmp_path_factory.mktemp("lab")) as started:
        yield started


def figures(name: str, load: ShopLoad, fault_at: float, healed_at: float, extra: dict[str, Any]) -> None:
    """One line per fault for the README's failure table (pytest -s shows it; CI's log keeps it)."""
    during = load.tally(since=fault_at, entry=None)
    print(f"\nFAULT {name}: " + json.dumps({
        "answers after the fault": {str(k): v for k, v in sorted(during.items(), key=str)},
        "clients saw failures for (s)": round(load.unavailable_window(fault_at, healed_at), 1),
        "failures after the heal": sum(n for k, n in load.tally(since=healed_at).items() if k not in (200, 201)),
        "longest answer (s)": round(load.longest(fault_at), 1),
        **extra}), flush=True)


def run_fault(shop: LabShop, name: str, inject: Any, heal: Any, entries: list[Host], *,
              hold_s: float, after_orders: int = 60, failing_for_s: float = LEASE_S * 4) -> None:
    """Load through `entries`' gateways; `inject()` once it flows, `heal()` after `hold_s`; then
    the load must go on, and the checks hold."""
    async def scenario() -> None:
        timeout = aiohttp.ClientTimeout(total=45)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await shop.settled(http)
            product = await shop.product(http, name)
            urls = [shop.gateway(h) for h in entries]
            load = ShopLoad(http, product, shop.tokens, urls)
            load.start()
            try:
                await load.served(after_orders)
                fault_at = load.now()
                inject()
                await asyncio.sleep(hold_s)
                heal()
                healed_at = load.now()
                await load.served(after_orders)
                settled_s = await shop.settled(http)
                await load.served(after_orders // 2)  # shards placed on a rejoined host move back to it
                quiet_from = load.now()
                await load.served(after_orders // 2)
            finally:
                await load.stop()
            wrong = load.wrong()
            assert not wrong, f"{load.tally(since=fault_at)}: {load.reasons(fault_at).most_common(8)}"
            try:
                counted = await check_stock(shop.db(), product, STOCK, lambda: shop.stock(http, product), load.created)
            except AssertionError as exc:
                stored = {str(o["_id"]) for o in shop.db()["orders"].find({}, {"_id": 1})}
                raise AssertionError(f"{exc}; holds of no stored order: {set(shop.holds) - stored}") from None
            # clients saw failures, or waited, no longer than a few leases (not until the heal)
            assert load.unavailable_window(fault_at, healed_at) < failing_for_s, load.reasons(fault_at)
            assert load.longest(fault_at) < failing_for_s, f"an answer took {load.longest(fault_at):.1f} s"
            quiet = load.tally(since=quiet_from)
            assert set(quiet) <= {200, 201}, f"not quiet after the heal: {quiet}"
            figures(name, load, fault_at, healed_at, {**counted, "settled after the heal (s)": round(settled_s, 1)})

    shop.lab.run(shop.client, scenario)


def test_a_host_killed_costs_at_most_the_lease_and_only_retryable_503s(shop: LabShop) -> None:
    h1, h2, h3 = shop.hosts
    run_fault(shop, "kill -9 of a host", lambda: h3.kill(signal.SIGKILL), lambda: shop.start(h3), [h1, h2],
              hold_s=LEASE_S * 2)


def test_a_host_cut_off_from_everyone_longer_than_the_lease_then_healed(shop: LabShop) -> None:
    h1, h2, h3 = shop.hosts
    others = [h1, h2, shop.database]
    run_fault(shop, "partition of a host (silent, 4 leases)", lambda: h3.cut_from(*others),
              lambda: h3.heal(*others), [h1, h2], hold_s=LEASE_S * 4)


@pytest.mark.skipif(not os.environ.get("UNSETTLED"),
                    reason="a call to a cut-off host that still beats can wait until two members suspect it: "
                           "26.7 s on a machine busier than both cores (issue 39); UNSETTLED=1 runs it")
def test_a_host_cut_off_from_the_other_hosts_but_not_from_the_database(shop: LabShop) -> None:
    """An asymmetric partition: h3 still beats, so only its peers' suspicion (they cannot
    connect to it) can declare it dead and move its shards."""
    h1, h2, h3 = shop.hosts
    run_fault(shop, "a host cut off from the other hosts only (asymmetric)", lambda: h3.cut_from(h1, h2),
              lambda: h3.heal(h1, h2), [h1, h2], hold_s=LEASE_S * 6, failing_for_s=LEASE_S * 6)


def test_a_host_cut_off_from_the_database_only(shop: LabShop) -> None:
    h1, h2, h3 = shop.hosts
    run_fault(shop, "a host cut off from the database", lambda: h3.cut_from(shop.database),
              lambda: h3.heal(shop.database), [h1, h2], hold_s=LEASE_S * 3)


def test_a_slow_link_to_one_host(shop: LabShop) -> None:
    h1, h2, h3 = shop.hosts
    run_fault(shop, "a slow link (512 kbit/s, 300 ms queue) to a host", lambda: h3.slow(), lambda: h3.fast(),
              [h1, h2, h3], hold_s=LEASE_S * 3, failing_for_s=LEASE_S * 2)


def test_a_rolling_deploy_of_every_host_and_back_keeps_every_order(shop: LabShop) -> None:
    """Each host in turn gets v2 (SIGHUP: each worker's new process joins, then the old one
    hands its shards off and leaves, while both serve one queue of connections), then each goes
    back to v1, all under load through every host's gateway: every version reaches every
    process, the stock stays exact, every acknowledged order is stored, no client sees a 500, a
    502 or a connection cut (an order whose connection closed unanswered is sent once more with
    its Idempotency-Key, as RFC 9112 allows), few see a 503 and nobody waits long."""
    async def scenario() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=45)) as http:
            await shop.settled(http)
            product = await shop.product(http, "rolling")
            load = ShopLoad(http, product, shop.tokens, [shop.gateway(h) for h in shop.hosts])
            load.start()
            began = time.monotonic()
            per_host = len(await shop.versions(http, shop.hosts[0]))  # a process per worker
            try:
                await load.served(40)
                for version in ("v2", "v1"):
                    for host in shop.hosts:
                        shop.deploy(host, version)
                        limit = time.monotonic() + 120
                        while await shop.versions(http, host) != [version] * per_host:
                            assert time.monotonic() < limit, await shop.versions(http, host)
                            await asyncio.sleep(0.2)
                        await load.served(20)
            finally:
                await load.stop()
            rolled_s = time.monotonic() - began
            counted = await check_stock(shop.db(), product, STOCK, lambda: shop.stock(http, product), load.created)
            figures("a rolling deploy of 3 hosts to v2 and back", load, 0.0, load.now(),
                    {**counted, "rolled for (s)": round(rolled_s, 1), "orders sent again": load.retried,
                     "failures": dict(load.reasons(0.0).most_common(6))})
            assert not load.wrong(), load.reasons(0.0).most_common(8)
            answers = load.tally()
            assert answers[503] / sum(answers.values()) < ROLL_UNAVAILABLE_SHARE, answers
            assert load.longest(0.0) < ROLL_LONGEST_S, f"an answer took {load.longest(0.0):.1f} s"

    shop.lab.run(shop.client, scenario)
