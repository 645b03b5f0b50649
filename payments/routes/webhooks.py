"""Provider webhooks: verified with the provider's own scheme, applied once, never trusted blindly."""
from __future__ import annotations

import logging
from typing import Any

from quart import Blueprint, request

from durable import env
from models.errors import ApiError

from .. import service
from ..providers import registry
from ..providers.base import InvalidEvent

bp = Blueprint("webhooks", __name__, url_prefix="/payments/webhooks")
log = logging.getLogger("rest_shop.webhooks")

MAX_EVENT_BYTES = 256 * 1024


@bp.post("/<provider_name>")
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
        raise ApiError(400, "invalid_signature", "Webhook signature verification failed") from None
    outcome = await service.apply_event(env, provider_name, event)
    return {"received": True, "outcome": outcome}
