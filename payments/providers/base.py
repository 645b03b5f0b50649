"""The one interface every payment provider implements, and the results it speaks in."""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Protocol

ChargeStatus = Literal["succeeded", "pending", "requires_action", "failed"]


def basic_auth(user: str, password: str) -> str:
    """An `Authorization: Basic` value (OAuth client credentials of PayPal and Daraja)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class ProviderUnavailable(Exception):
    """Timeout, connection error or 5xx: retryable; nothing may be assumed charged or not."""


class RefundNotSupported(Exception):
    """The provider has no refund API we can call (M-Pesa reversals are done in the org portal)."""


class InvalidEvent(Exception):
    """A webhook/callback that is forged, stale or malformed."""


@dataclass(frozen=True)
class Charge:
    """What we ask for: our payment id is the provider-side reference and idempotency key."""

    payment_id: str
    order_id: str
    amount_minor: int
    currency: str
    data: Mapping[str, Any]
    public_base_url: str = ""  # PUBLIC_BASE_URL: where provider callbacks reach us


@dataclass
class ChargeResult:
    transaction_id: str | None
    status: ChargeStatus
    amount_minor: int | None = None
    currency: str | None = None
    client_secret: str | None = None
    approval_url: str | None = None
    customer_message: str | None = None
    failure_reason: str | None = None


@dataclass
class RefundResult:
    refund_id: str
    status: Literal["succeeded", "pending", "failed"]
    amount_minor: int


@dataclass
class ProviderEvent:
    """A verified provider notification, reduced to what moves our state."""

    event_id: str
    kind: Literal["succeeded", "failed", "refunded", "ignored"]
    transaction_id: str | None = None
    payment_id: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    raw_type: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Provider(Protocol):
    name: str
    mode: Literal["live", "sandbox", "local"]

    async def create(self, charge: Charge) -> ChargeResult: ...
    async def verify(self, transaction_id: str) -> ChargeResult: ...
    async def refund(self, transaction_id: str, amount_minor: int, idempotency_key: str) -> RefundResult: ...
    async def parse_event(self, payload: bytes, headers: Mapping[str, str]) -> ProviderEvent: ...
    async def reachable(self) -> bool: ...
    # optional: `currencies` (a frozenset of the ISO codes it takes) and `amount_problem(amount_minor)`
    # (why it cannot be asked for that amount), read by payments.settlement.payable_problem
