"""Which upstream serves a path, and the path it sees there (ARCHITECTURE.md, API conventions).

`UPSTREAMS` is the one table of services behind the gateway: name → its service binding. The
breakers, the health probes and the forwarding all follow it; a new service is a row here, a
rule in `route`, a `[[services]]` binding and a `RATE_LIMITS` entry.
"""
from __future__ import annotations

from durable.rpc.wire import INTERNAL_PREFIX
from web.errors import ApiError

PAYMENTS = "payments"
BASE = "base"
IMAGES = "images"
UPSTREAMS: dict[str, str] = {BASE: "BASE_SERVICE", PAYMENTS: "PAYMENT_SERVICE", IMAGES: "IMAGE_SERVICE"}
IMAGE_PATHS = ("/uploads/", "/cdn-cgi/image/")  # originals, and variants in Cloudflare's URL format


def route(path: str) -> tuple[str, str]:
    """`/api/payments/x` and `/payments/x` → payments; `/uploads/…` and `/cdn-cgi/image/…` →
    images; everything else → base; `/api` stripped; the runtime's internal routes are 404 here
    (a forward reaches a service's internal listener)."""
    if path == "/api" or path.startswith("/api/"):
        path = path[len("/api"):] or "/"
    if path.startswith(INTERNAL_PREFIX):  # the runtime's own routes are never forwarded (Cloudflare keeps /cdn-cgi/)
        raise ApiError(404, "not_found", "Not found")
    if path == "/payments" or path.startswith("/payments/"):
        return PAYMENTS, path
    if path.startswith(IMAGE_PATHS):
        return IMAGES, path
    return BASE, path


def route_template(path: str) -> str:
    """The metrics' route label of a forwarded path: the upstream's whole tree, never the path."""
    try:
        upstream, _ = route(path)
    except ApiError:
        return "/cdn-cgi/*"
    if upstream == IMAGES:
        return "/cdn-cgi/image/*" if path.removeprefix("/api").startswith("/cdn-cgi/") else "/uploads/*"
    return "/payments/*" if upstream == PAYMENTS else "/*"
