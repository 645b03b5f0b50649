"""Shoppers under way while something goes wrong: each orders one unit and reads its orders, in a
loop, through the gateways it is given; every answer is kept (when, which status, how long), so a
test can ask what clients saw before, during and after a fault, and check the stock after."""
from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from bson import ObjectId


@dataclass(frozen=True)
class Answer:
    at: float            # seconds since the load began, when the request was sent (answered: at + took)
    took: float
    status: int | str    # the HTTP status, or the client-side error's name
    entry: str           # the gateway it went through
    retry_after: bool = False
    detail: str = ""


@dataclass
class ShopLoad:
    http: aiohttp.ClientSession
    product_id: str
    tokens: list[str]
    entries: list[str]  # gateway URLs, spread over as a load balancer would
    answers: list[Answer] = field(default_factory=list)
    created: list[str] = field(default_factory=list)  # ids of the orders acknowledged with a 201
    retried: int = 0  # orders sent once more after their connection closed unanswered
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _began: float = 0.0

    def start(self) -> None:
        self._began = time.monotonic()
        self._tasks = [asyncio.ensure_future(self._shopper(i)) for i in range(len(self.tokens))]

    def now(self) -> float:
        return time.monotonic() - self._began

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def served(self, more: int, timeout_s: float = 90) -> None:
        """Wait until `more` orders more were acknowledged (the load goes on)."""
        goal = len(self.created) + more
        limit = time.monotonic() + timeout_s
        while len(self.created) < goal:
            assert time.monotonic() < limit, f"only {len(self.created)} of {goal} orders in {timeout_s} s: {self.tally()}"
            await asyncio.sleep(0.05)

    async def _shopper(self, i: int) -> None:
        auth = {"Authorization": f"Bearer {self.tokens[i]}"}
        turn = i
        while not self._stop.is_set():
            entry = self.entries[turn % len(self.entries)]
            turn += 1
            order = {**auth, "Idempotency-Key": uuid.uuid4().hex}  # sent again, it is still one order
            await self._send(entry, "POST", "/api/orders", order, {"productId": self.product_id, "quantity": 1})
            await self._send(entry, "GET", "/api/orders?limit=5", auth, None)

    async def _send(self, entry: str, method: str, path: str, headers: dict[str, str], body: Any) -> None:
        """One request, sent once more (as RFC 9112 §9.3.1 allows) when its connection closed before
        any answer and sending it again is safe: aiohttp does so itself for idempotent methods, the
        Idempotency-Key makes an order one. Its answer is the second attempt's."""
        sent = time.monotonic()
        for attempt in (1, 2):
            try:
                async with self.http.request(method, entry + path, json=body, headers=headers) as resp:
                    reply = await resp.json(content_type=None)
                    if resp.status == 201 and method == "POST":
                        self.created.append(reply["createdOrder"]["_id"])
                    answer = Answer(sent - self._began, time.monotonic() - sent, resp.status, entry,
                                    "Retry-After" in resp.headers,
                                    "" if resp.status < 300 else str((reply or {}).get("error", reply))[:200])
                    break
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                answer = Answer(sent - self._began, time.monotonic() - sent, type(exc).__name__, entry,
                                detail=str(exc)[:200])
                if attempt == 1 and "Idempotency-Key" in headers:
                    self.retried += 1
                    continue
                break
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                answer = Answer(sent - self._began, time.monotonic() - sent, type(exc).__name__, entry,
                                detail=str(exc)[:200])
                break
        self.answers.append(answer)

    # -- what clients saw ------------------------------------------------------------------------
    def tally(self, since: float = 0.0, until: float = float("inf"), entry: str | None = None) -> Counter[Any]:
        return Counter(a.status for a in self.answers
                       if since <= a.at + a.took < until and (entry is None or a.entry == entry))

    def reasons(self, since: float = 0.0) -> Counter[str]:
        """The failures after `since`, by status and error code."""
        return Counter(f"{a.status} {a.detail[:90]}" for a in self.answers
                       if a.at + a.took >= since and not (isinstance(a.status, int) and a.status < 300))

    def wrong(self, entries: list[str] | None = None) -> list[Answer]:
        """Answers no client should see: a 5xx other than a 503 with Retry-After, or no answer."""
        return [a for a in self.answers if (entries is None or a.entry in entries)
                and not (isinstance(a.status, int) and (a.status < 500 or (a.status == 503 and a.retry_after)))]

    def unavailable_window(self, since: float, until: float = float("inf")) -> float:
        """Seconds from `since` to the last failure answered after it (sent before `until`)."""
        failed = [a.at + a.took for a in self.answers if a.at + a.took >= since and a.at < until
                  and not (isinstance(a.status, int) and a.status < 300)]
        return max(failed, default=since) - since

    def longest(self, since: float = 0.0) -> float:
        return max((a.took for a in self.answers if a.at >= since), default=0.0)


async def check_stock(db: Any, product_id: str, initial: int, read_stock: Callable[[], Awaitable[int]],
                      acknowledged: list[str], settle_s: float = 60) -> dict[str, Any]:
    """The invariants after a fault: every acknowledged order is stored, and the stock comes to
    exactly what the stored orders left (none oversold, none reserved twice or lost) once the
    orders cut mid-way were finished or undone by their recovery alarms."""
    def stored_orders() -> list[dict[str, Any]]:
        return list(db["orders"].find({"items.productId": {"$in": [product_id, ObjectId(product_id)]}},
                                      {"items": 1}))

    orders = await asyncio.to_thread(stored_orders)
    stored = {str(o["_id"]) for o in orders}
    lost = [order_id for order_id in acknowledged if order_id not in stored]
    assert not lost, f"{len(lost)} acknowledged orders are not stored: {lost[:5]}"
    began = time.monotonic()
    while True:
        units = sum(item["quantity"] for o in orders for item in o["items"] if str(item["productId"]) == product_id)
        stock = await read_stock()
        assert 0 <= stock <= initial - units, f"oversold: stock {stock}, {units} units in stored orders"
        if stock == initial - units:
            return {"acknowledged": len(acknowledged), "stored": len(orders), "units": units,
                    "stock exact after (s)": round(time.monotonic() - began, 1)}
        if time.monotonic() - began > settle_s:
            voided = await asyncio.to_thread(lambda: [str(o["_id"]) for o in db["orders"].find({"void": True})])
            raise AssertionError(f"stock {stock} never came to {initial} - {units}; voided orders: {voided[:10]}")
        await asyncio.sleep(0.5)
        orders = await asyncio.to_thread(stored_orders)
