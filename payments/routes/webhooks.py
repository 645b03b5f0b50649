"""Provider webhooks: verified with the provider's own scheme, applied once, never trusted blindly."""
from __future__ import annotations

import logging
from typing import Any

from quart import Blueprint, request

from durable import env
from models.ids import oid
from web.docs import documents_errors
from web.errors import ApiError
from web.requests import client_ip

from .. import metrics, service
from ..providers import registry
from ..providers.base import InvalidEvent

bp = Blueprint("webhooks", __name__, url_prefix="/payments")
log = logging.getLogger("rest_shop.webhooks")

MAX_EVENT_BYTES = 256 * 1024
# apply_event/apply_mpesa_callback's outcome → the metric's result (anything else: seen before)
_RESULTS = {"applied": "applied", "busy": "busy", "refused": "rejected", "unknown": "rejected"}


@bp.post("/webhooks/<provider_name>")
async def receive(provider_name: str) -> Any:
    provider = registry.providers.get(provider_name)
    if provider is None:
        raise ApiError(404, "not_found", f"No {provider_name} webhook here")
    payload = await request.get_data()
    if len(payload) > MAX_EVENT_BYTES:
        raise ApiError(413, "payload_too_large", "Webhook payload too large")
    try:
        event = await provider.parse_event(payload, {k.lower(): v for k, v in request.headers.items()})
    except InvalidEvent as exc:
        log.warning("rejected %s webhook: %s", provider_name, exc)
        metrics.WEBHOOKS.labels(provider_name, "rejected").inc()
        raise ApiError(400, "invalid_signature", "Webhook signature verification failed") from None
    outcome = await service.apply_event(env, provider_name, event)
    metrics.WEBHOOKS.labels(provider_name, _RESULTS.get(outcome, "duplicate")).inc()
    if outcome == "busy":  # another delivery of this event is being applied; the provider retries later
        raise ApiError(409, "event_in_progress", "This event is being applied", headers={"Retry-After": "5"})
    return {"received": True, "outcome": outcome}


@bp.post("/mpesa/callback")
@documents_errors(400, 401, 403, 404, 409, 422)
async def mpesa_callback() -> Any:
    """The original's path. Daraja signs nothing: the callback URL carries our payment id and an
    HMAC of it (`sig`), so it settles that payment only, and only with what our push asked for;
    optionally the sender's IP is checked too. Accepted callbacks get Daraja's "Accepted"."""
    provider = registry.providers.get("mpesa")
    if provider is None:
        raise ApiError(404, "not_found", "M-Pesa is not enabled here")
    payment_id = request.args.get("payment", "")
    if oid(payment_id) is None or not provider.callback_is_genuine(payment_id, request.args.get("sig", "")):
        raise ApiError(401, "unauthorized", "Unknown callback credential")
    allowed = [ip.strip() for ip in str(env.get("MPESA_ALLOWED_IPS", "")).split(",") if ip.strip()]
    if allowed and client_ip() not in allowed:
        raise ApiError(403, "forbidden", "Callbacks are accepted from Safaricom's addresses only")
    payload = await request.get_data()
    try:
        event = await provider.parse_event(payload, {})
    except InvalidEvent as exc:
        metrics.WEBHOOKS.labels("mpesa", "rejected").inc()
        raise ApiError(400, "invalid_callback", str(exc)) from None
    outcome = await service.apply_mpesa_callback(env, payment_id, event)
    metrics.WEBHOOKS.labels("mpesa", _RESULTS.get(outcome, "duplicate")).inc()
    if outcome == "refused":
        raise ApiError(422, "invalid_callback", "The callback does not match its payment; it was not applied")
    if outcome == "busy":
        raise ApiError(409, "event_in_progress", "This callback is being applied", headers={"Retry-After": "5"})
    return {"ResultCode": 0, "ResultDesc": "Accepted"}
