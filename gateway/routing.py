"""Which upstream serves a path, and the path it sees there (DESIGN §1)."""
from __future__ import annotations

PAYMENTS = "payments"
BASE = "base"


def route(path: str) -> tuple[str, str]:
    """`/api/payments/x` and `/payments/x` → payments; everything else → base; `/api` stripped."""
    if path == "/api" or path.startswith("/api/"):
        path = path[len("/api"):] or "/"
    if path == "/payments" or path.startswith("/payments/"):
        return PAYMENTS, path
    return BASE, path
