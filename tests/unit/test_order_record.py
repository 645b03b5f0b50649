"""OrderLock's record reads every dict any version stored, and writes back the same dict: old and
new code share one object's storage during a rolling deploy or a rollback."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from bson import ObjectId

from base.objects.order_record import OrderRecord, PaymentInProgress, Phase, Step

SPEC = {"orderId": "65f1c0ffee0ddba11b0a7c11", "userId": "u1", "currency": None, "shippingAddress": None,
        "items": [{"productId": "65f1c0ffee0ddba11b0a7c12", "quantity": 2}]}
ORDER = {"_id": ObjectId(SPEC["orderId"]), "userId": "u1", "status": "pending", "version": 3,
         "createdAt": datetime(2026, 12, 7, tzinfo=UTC), "items": [], "total_minor": 500}

STORED: list[dict[str, Any]] = [
    {"phase": "reserving", "spec": SPEC, "attempt": 0},
    {"phase": "rejected", "spec": SPEC, "attempt": 2},
    {"phase": "interrupted", "spec": SPEC, "attempt": 1},
    {"phase": "created", "spec": SPEC, "attempt": 0, "order": ORDER, "pending": []},
    {"phase": "created", "spec": SPEC, "attempt": 1, "order": ORDER, "pending": ["finalize_stock", "unclaim", "save"],
     "payment_lease": {"payment": "pay-1", "until": 1_800_000_000.5}},
    {"phase": "created", "spec": SPEC, "attempt": 0, "order": ORDER, "pending": [], "addedLater": {"x": 1}},
]


@pytest.mark.parametrize("stored", STORED)
def test_every_stored_shape_loads_and_dumps_back_unchanged(stored: dict[str, Any]) -> None:
    assert OrderRecord.load(stored).dump() == stored  # type: ignore[union-attr]


def test_older_records_without_attempt_or_pending_read_as_the_first_attempt_with_nothing_owed() -> None:
    record = OrderRecord.load({"phase": "created", "spec": SPEC, "order": ORDER})
    assert record is not None and record.attempt == 0 and record.pending == [] and record.paying is None
    assert record.phase is Phase.CREATED and record.created is ORDER


def test_phases_and_steps_are_typed_and_stored_as_plain_strings() -> None:
    record = OrderRecord.load(STORED[4])
    assert record is not None and record.pending == [Step.FINALIZE_STOCK, Step.UNCLAIM, Step.SAVE]
    assert record.paying == PaymentInProgress("pay-1", 1_800_000_000.5)
    dumped = record.dump()
    assert type(dumped["phase"]) is str and all(type(step) is str for step in dumped["pending"])


def test_an_unknown_phase_or_step_is_refused_not_guessed() -> None:
    with pytest.raises(ValueError):
        OrderRecord.load({"phase": "shipped", "spec": SPEC})
    with pytest.raises(ValueError):
        OrderRecord.load({"phase": "created", "spec": SPEC, "order": ORDER, "pending": ["teleport"]})
