"""The money decisions, each in one place: whether an amount can be asked of a provider, whether
what a provider reports pays what is owed, and what a refund leaves. The order's own check
(`OrderLock.mark_paid`, in base) is the same comparison, `models.money.pays`."""
from __future__ import annotations

from typing import Any

from models.money import pays


def payable_problem(provider: Any, amount_minor: int, currency: str) -> str | None:
    """Why `provider` cannot be asked for this amount (its currencies, its own rule), or None."""
    currencies = getattr(provider, "currencies", None)
    if currencies and currency not in currencies:
        return f"{provider.name} takes {', '.join(sorted(currencies))}, not {currency}"
    rule = getattr(provider, "amount_problem", None)
    return rule(amount_minor) if rule is not None else None


def settles(payment: dict[str, Any], reported_minor: int | None, reported_currency: str | None) -> str | None:
    """Why a provider's success does not pay this payment (amount or currency), or None. A
    provider that reports no amount (M-Pesa's STK query) confirms the one asked for."""
    return pays(payment["amount_minor"], payment["currency"], reported_minor, reported_currency)


def refundable_minor(payment: dict[str, Any]) -> int:
    """What can still be given back."""
    return int(payment["amount_minor"]) - int(payment.get("refunded_minor", 0))


def after_refund(payment: dict[str, Any], refunded_minor: int) -> tuple[int, str]:
    """(refunded in all, the payment's status) once `refunded_minor` more went back."""
    total = int(payment.get("refunded_minor", 0)) + refunded_minor
    return total, "refunded" if total >= payment["amount_minor"] else "partially_refunded"
