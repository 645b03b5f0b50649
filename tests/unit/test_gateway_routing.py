"""Gateway routing table (ARCHITECTURE.md, API conventions)."""
from __future__ import annotations

import pytest

from gateway.routing import BASE, PAYMENTS, route


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
