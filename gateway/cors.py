"""CORS from `ALLOWED_ORIGINS` (comma-separated, as the original): credentials only for listed
origins, never `*` with credentials."""
from __future__ import annotations

from collections.abc import MutableMapping

ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key, X-Request-Id, If-None-Match"
EXPOSE_HEADERS = ("X-Request-Id, ETag, X-Cache, Retry-After, Idempotent-Replayed, "
                  "RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset")


def allowed_origins(spec: str) -> set[str]:
    return {o.strip().rstrip("/") for o in spec.split(",") if o.strip()}


def cors_headers(origin: str | None, spec: str, *, preflight: bool = False,
                 requested_headers: str | None = None) -> dict[str, str] | None:
    """The headers to add for this Origin, or None when it is not allowed."""
    if not origin:
        return None
    allowed = allowed_origins(spec)
    if origin.rstrip("/") in allowed:
        headers = {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true"}
    elif "*" in allowed:
        headers = {"Access-Control-Allow-Origin": "*"}
    else:
        return None
    if preflight:
        headers.update({"Access-Control-Allow-Methods": ALLOW_METHODS,
                        "Access-Control-Allow-Headers": requested_headers or ALLOW_HEADERS,
                        "Access-Control-Max-Age": "600"})
    else:
        headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    return headers


def vary_with(current: str, *names: str) -> str:
    """A Vary value that also names `names` (each once, whatever its case)."""
    present = [v.strip() for v in current.split(",") if v.strip()]
    for name in names:
        if name.lower() not in (p.lower() for p in present):
            present.append(name)
    return ", ".join(present)


def add_vary(headers: MutableMapping[str, str], *names: str) -> None:
    headers["Vary"] = vary_with(headers.get("Vary", ""), *names)
