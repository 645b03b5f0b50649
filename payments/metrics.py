"""The payments service's figures for /metrics (served with the runtime's): outcomes by provider,
refunds, provider callbacks, and the payments nobody has settled yet."""
from __future__ import annotations

from prometheus_client import Counter, Gauge

PAYMENTS = Counter("shop_payments", "Provider outcomes applied to payments, by provider and outcome (succeeded, "
                   "failed, pending, …; refunded_unwanted: paid for an order that could no longer take it)",
                   ["provider", "outcome"])
REFUNDS = Counter("shop_refunds", "Refunds the provider accepted (asked for, or automatic)", ["provider"])
WEBHOOKS = Counter("shop_webhooks", "Provider callbacks, by provider and result (applied, duplicate: seen before, "
                   "busy: being applied, rejected: bad signature or not matching its payment)",
                   ["provider", "result"])
IN_DOUBT = Gauge("shop_payments_in_doubt", "Open payments idle past RECONCILE_AFTER_S that the last sweep could "
                 "not settle (the provider still says open, or did not answer)", multiprocess_mode="livemax")
