"""Payments the provider finished but nobody told us about: no webhook came (or none is set up)
and the client never asked again. A sweep asks the provider about each open payment older than
a grace period, and applies the answer the same way a webhook or `verify` does."""
from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from pymongo.errors import PyMongoError

from models.stamps import now

from . import metrics
from .providers import registry
from .providers.base import ProviderUnavailable
from .service import payments, settle

log = logging.getLogger("rest_shop.reconcile")

OPEN = ("processing", "pending", "requires_action")


async def reconcile_open_payments(env: Any, *, older_than_s: float, batch: int = 100) -> int:
    """Ask the providers about open payments idle for `older_than_s`; returns how many moved."""
    store = await payments(env)
    stamp = now()
    cutoff = stamp - timedelta(seconds=older_than_s)
    horizon = stamp - timedelta(seconds=float(env.get("IDEMPOTENCY_TTL_S", 86400)))  # abandoned long ago: leave
    moved = examined = 0
    async for payment in store.open_and_idle(OPEN, cutoff, horizon, batch):
        examined += 1
        provider = registry.for_method(payment["provider"])
        if provider is None:
            continue
        try:
            result = await provider.verify(payment["transactionId"])
        except ProviderUnavailable as exc:
            log.warning("reconcile: %s is unreachable (%s); next sweep", payment["provider"], exc)
            break
        await store.mark_checked(payment["_id"])
        if result.status != payment["status"]:
            await settle(env, payment, result)
            moved += 1
            log.warning("reconcile: payment %s was %s at the provider; applied", payment["_id"], result.status)
    metrics.IN_DOUBT.set(examined - moved)
    return moved


async def sweep_forever(env: Any) -> None:
    """Every RECONCILE_EVERY_S (0 turns it off), payments idle for RECONCILE_AFTER_S."""
    every = float(env.get("RECONCILE_EVERY_S", 60))
    after = float(env.get("RECONCILE_AFTER_S", 120))
    while every > 0:
        await asyncio.sleep(every)
        try:
            await reconcile_open_payments(env, older_than_s=after)
        except PyMongoError as exc:  # the database is down: /health says so; try again next time
            log.warning("reconcile sweep skipped: %s", type(exc).__name__)
