"""What an OrderLock keeps about its order: the phase of its creation, the request it came from,
the order once written, the steps still to run, and the payment in progress. Stored as the same
plain dict as ever (so any version reads any other's), handled as a typed record."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Phase(StrEnum):
    RESERVING = "reserving"  # the intent is durable; stock is being held; the order is not written yet
    CREATED = "created"  # the order is written: `order` is the authority from here
    REJECTED = "rejected"  # refused (stock, product, currency): what it held was given back
    INTERRUPTED = "interrupted"  # a crash cut creation before the write: undone on recovery


class Step(StrEnum):
    """An external step a transition still owes (each idempotent, run in order, then forgotten)."""
    RELEASE_STOCK = "release_stock"  # an unpaid order's holds go back
    FINALIZE_STOCK = "finalize_stock"  # sold: the holds leave the product
    RESTOCK = "restock"  # a sold order cancelled: its units come back once
    UNCLAIM = "unclaim"  # no longer one of the shopper's unpaid orders
    SAVE = "save"  # the read model (`orders`) gets this version


@dataclass(slots=True)
class PaymentInProgress:
    """At most one payment id may run against an order at a time, until `until` (epoch seconds)."""
    payment: str
    until: float


@dataclass(slots=True)
class OrderRecord:
    phase: Phase
    spec: dict[str, Any]  # orderId, userId, items [{productId, quantity}], currency, shippingAddress
    attempt: int = 0  # which creation attempt holds stock (a retry after a rejection is the next)
    order: dict[str, Any] | None = None  # set once CREATED
    pending: list[Step] = field(default_factory=list)
    paying: PaymentInProgress | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys a newer version wrote: kept as they came

    @property
    def created(self) -> dict[str, Any]:
        """The written order (only a CREATED record has one)."""
        assert self.order is not None, f"an order in phase {self.phase} has no order document"
        return self.order

    @classmethod
    def load(cls, stored: dict[str, Any] | None) -> OrderRecord | None:
        """Any record a version of OrderLock wrote (older ones lack `attempt` or `pending`)."""
        if stored is None:
            return None
        rest = dict(stored)
        lease = rest.pop("payment_lease", None)
        return cls(phase=Phase(rest.pop("phase")), spec=rest.pop("spec"), attempt=int(rest.pop("attempt", 0)),
                   order=rest.pop("order", None), pending=[Step(step) for step in rest.pop("pending", [])],
                   paying=PaymentInProgress(lease["payment"], lease["until"]) if lease else None, extra=rest)

    def dump(self) -> dict[str, Any]:
        """The stored form: plain strings and dicts, the keys every version reads."""
        stored: dict[str, Any] = {**self.extra, "phase": self.phase.value, "spec": self.spec, "attempt": self.attempt}
        if self.order is not None:
            stored["order"] = self.order
            stored["pending"] = [step.value for step in self.pending]
        if self.paying is not None:
            stored["payment_lease"] = {"payment": self.paying.payment, "until": self.paying.until}
        return stored
