"""Service-to-service trust: only requests the gateway signed reach a service's handlers, and
outside local development the signing keys must be real."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Quart, g, request, websocket

from durable import env
from durable.asgi import through_binding
from durable.config import is_development
from durable.errors import StartupRefused
from durable.rpc.wire import INTERNAL_AUDIENCE_HEADER, SIGN_AGAIN_HEADER
from durable.signing import (
    NonceCache,
    NonceCacheFull,
    SignatureError,
    SignedBeforeStart,
    covered_headers,
    sign,
    verify,
)

from .errors import ApiError

log = logging.getLogger("rest_shop.service_auth")


def flag(value: Any) -> bool:
    """A boolean var, whether TOML gave a bool or a string (`--var X:true`)."""
    return str(value).strip().lower() in ("1", "true", "yes", "on")


MIN_KEY_BYTES = 32


class InsecureConfiguration(StartupRefused):
    """Production refuses to start on this: the message names the setting and the fix."""


def key_problems(env: Any, names: tuple[str, ...] = ("JWT_KEY", "SERVICE_AUTH_KEY")) -> list[str]:
    """Outside local development, signing keys must be set and at least 32 bytes long."""
    if is_development(env):
        return []
    found = []
    for name in names:
        value = env.get(name)
        if not value:
            found.append(f"{name} is not set: set it in the process environment")
        elif len(str(value).encode()) < MIN_KEY_BYTES:
            found.append(f"{name} is shorter than {MIN_KEY_BYTES} bytes: use a longer random key "
                         f"(e.g. `openssl rand -base64 48`)")
    return found


def require_strong_keys(names: tuple[str, ...] = ("JWT_KEY", "SERVICE_AUTH_KEY")) -> None:
    found = key_problems(env, names)
    if found:
        raise InsecureConfiguration("; ".join(found))


SIGNATURE_HEADER = "X-Gateway-Signature"
CLIENT_IP_HEADER = "CF-Connecting-IP"  # the client address the gateway resolved (Cloudflare's name)
AUDIENCE_HEADER = INTERNAL_AUDIENCE_HEADER  # the node (or worker) the forward was signed for (the binding sets it)
# every header the services act on, so every header the gateway vouches for
SIGNED_HEADERS = ("authorization", "cf-connecting-ip", "content-type", "idempotency-key", AUDIENCE_HEADER)
# which service a call between services comes from, for routes only one caller may use (never
# from a client: the gateway drops it; under REQUIRE_SERVICE_AUTH it counts only when signed)
CALLER_HEADER = "x-service-caller"
PROBE_PATHS = frozenset({"/health", "/health/live", "/openapi.json"})  # probes and the public API description


def signer(method: str, target: str, body: bytes,
           covering: tuple[str, ...] = ()) -> Callable[[list[tuple[str, str]]], list[tuple[str, str]]]:
    """Signs a request to a service as it leaves this process (the binding calls it per target
    node): over what the service will read (a header's first value), the node it goes to (its
    audience) among them, and the headers in `covering`. The gateway signs every forward with it;
    base, its calls to the image service (naming itself in CALLER_HEADER)."""
    def signature(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        sent: dict[str, str] = {}
        for name, value in headers:
            sent.setdefault(name.lower(), value)
        vouched = [(name, sent.get(name, "")) for name in (*SIGNED_HEADERS, *covering)]
        return [(SIGNATURE_HEADER.lower(), sign(env.SERVICE_AUTH_KEY, method, target, body, headers=vouched))]
    return signature


def called_by(service: str) -> bool:
    """Did `service` make this request? Its CALLER_HEADER names it and, with REQUIRE_SERVICE_AUTH
    on, the (already verified) signature covers that header: only a holder of the key could."""
    if request.headers.get(CALLER_HEADER) != service:
        return False
    if not flag(env.get("REQUIRE_SERVICE_AUTH", False)) or through_binding(request.scope):
        return True  # (in process: the gateway drops the header from what clients send)
    return CALLER_HEADER in covered_headers(request.headers.get(SIGNATURE_HEADER))


def _nonces(tolerance_s: float) -> NonceCache:
    return env.isolate_state("gateway_nonces", lambda: NonceCache(tolerance_s))


async def _no_body() -> bytes:
    return b""


def install_service_auth(app: Quart) -> None:
    """With REQUIRE_SERVICE_AUTH on, only requests the gateway signed (HMAC with SERVICE_AUTH_KEY
    over method, target, body and SIGNED_HEADERS (the caller's credentials and address, how to read
    the body, its idempotency key, the node it is for), at most 60 s old, each signature used
    once, on the node it was signed for) reach the handlers; others get 401 and do nothing. A
    verified request's `CF-Connecting-IP` is the client address (`g.client_ip`); otherwise (and always with
    REQUIRE_SERVICE_AUTH off, in local development) it is the socket peer."""
    async def verify_gateway_signature(incoming: Any, method: str, read_body: Callable[[], Awaitable[bytes]]) -> None:
        g.client_ip = None
        if not flag(env.get("REQUIRE_SERVICE_AUTH", False)):
            return  # local development: no signatures checked, so no forwarded address believed either
        if through_binding(incoming.scope):  # a service binding in this process: nothing to verify
            g.client_ip = incoming.headers.get(CLIENT_IP_HEADER) or None
            return
        body = await read_body()
        header = incoming.headers.get(SIGNATURE_HEADER)
        if incoming.path in PROBE_PATHS and not header:
            return
        query = incoming.query_string.decode("latin-1")
        target = incoming.path + (f"?{query}" if query else "")
        tolerance_s = float(env.get("SERVICE_AUTH_TOLERANCE_S", 60))
        try:
            signed = verify(env.SERVICE_AUTH_KEY, header, method, target, body,
                            header_value=incoming.headers.get, required=SIGNED_HEADERS, tolerance_s=tolerance_s)
            if incoming.headers.get(AUDIENCE_HEADER) != env.audience():  # a replay to another node
                raise SignatureError("signed for another node")
            _nonces(tolerance_s).check_and_remember(signed)
        except SignatureError as exc:
            if incoming.path in PROBE_PATHS:
                return
            log.warning("refused %s %s: %s", method, incoming.path, exc)
            raise ApiError(401, "service_auth_failed", f"Requests must come through the gateway ({exc})",
                           headers={SIGN_AGAIN_HEADER: "1"} if isinstance(exc, SignedBeforeStart) else None) from None
        except NonceCacheFull as exc:  # fail closed rather than forget a live signature
            log.error("refused %s %s for now: %s", method, incoming.path, exc)
            raise ApiError(503, "service_unavailable", "Too many requests are in flight to tell a replay; "
                           "try again shortly", headers={"Retry-After": "1"}) from None
        g.client_ip = incoming.headers.get(CLIENT_IP_HEADER) or None

    @app.before_serving
    async def _remember_from_now() -> None:
        """The replay guard starts with the worker: what was signed before it is refused."""
        _nonces(float(env.get("SERVICE_AUTH_TOLERANCE_S", 60)))

    @app.before_request
    async def _verify_request() -> None:
        await verify_gateway_signature(request, request.method, request.get_data)

    @app.before_websocket
    async def _verify_websocket() -> None:  # the gateway signs an upgrade as a GET without a body
        await verify_gateway_signature(websocket, "GET", _no_body)
