"""Gateway routing table (ARCHITECTURE.md, API conventions)."""
from __future__ import annotations

import pytest

from durable.rpc.wire import INTERNAL_PREFIX
from gateway.routing import BASE, PAYMENTS, route
from web.errors import ApiError


@pytest.mark.parametrize("path, expected", [
    ("/api/payments/initiate", (PAYMENTS, "/payments/initiate")),
    ("/payments/webhooks/stripe", (PAYMENTS, "/payments/webhooks/stripe")),
    ("/api/payments", (PAYMENTS, "/payments")),
    ("/api/products", (BASE, "/products")),
    ("/products/1", (BASE, "/products/1")),
    ("/api", (BASE, "/")),
    ("/apiary", (BASE, "/apiary")),
    ("/api/paymentsx", (BASE, "/paymentsx")),
    ("/health", (BASE, "/health")),
])
def test_route(path: str, expected: tuple[str, str]) -> None:
    assert route(path) == expected


@pytest.mark.parametrize("path", [INTERNAL_PREFIX + "UserSessions/" + "0" * 64 + "/check", "/api" + INTERNAL_PREFIX + "x"])
def test_the_runtime_s_internal_routes_are_never_forwarded(path: str) -> None:
    """A forward reaches a service's internal listener, where these routes live: the edge refuses them."""
    with pytest.raises(ApiError) as refused:
        route(path)
    assert refused.value.status == 404
