"""The shop's own figures for /metrics (served with the runtime's): orders and sign-ins."""
from __future__ import annotations

from prometheus_client import Counter

from models.errors_domain import (
    Conflict,
    InsufficientStock,
    NotFound,
    UnpaidLimit,
    Unprocessable,
)
from web.errors import ApiError

ORDERS_CREATED = Counter("shop_orders_created", "Orders placed (stock held, order written)")
ORDERS_REFUSED = Counter("shop_orders_refused", "Orders refused, by reason (insufficient_stock, unpaid_limit, "
                         "not_found, conflict, unprocessable)", ["reason"])
SIGNINS = Counter("shop_signins", "Sign-ins by provider (password, google, microsoft, apple) and outcome "
                  "(ok, refused)", ["provider", "outcome"])

_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (InsufficientStock, "insufficient_stock"), (UnpaidLimit, "unpaid_limit"), (NotFound, "not_found"), (Conflict, "conflict"),
    (Unprocessable, "unprocessable"))


def order_refused(exc: Exception) -> None:
    """Count a refusal by its reason: a domain error's kind, or an API error's code."""
    if isinstance(exc, ApiError):
        if exc.status < 500:  # a refusal of the order; a 5xx is our failure, counted as such
            ORDERS_REFUSED.labels(exc.code).inc()
        return
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            ORDERS_REFUSED.labels(reason).inc()
            return
