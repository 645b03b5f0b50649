"""Money: integer minor units in storage, decimal major units in the API (at most 2 decimals)."""
from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated

from pydantic import BeforeValidator, Field, WithJsonSchema

AMOUNT_PATTERN = r"^[0-9]{1,10}(\.[0-9]{1,2})?$"


def _amount_text(value: object) -> object:
    """A string amount must look like one ("19.99"): not "1e3", " 5", "NaN" or "0x10"."""
    if isinstance(value, str) and not re.match(AMOUNT_PATTERN, value):
        raise ValueError("an amount as a string is digits with at most 2 decimals, e.g. \"19.99\"")
    return value


# Accepted from clients: ≥ 0, at most 2 decimals (19.999 is a 400, not a silent rounding); as a
# JSON number or a decimal string. The number is read as written (19.99 is exactly 19.99), so
# `multipleOf: 0.01` says exactly what is accepted.
Amount = Annotated[Decimal, BeforeValidator(_amount_text), Field(ge=0, max_digits=12, decimal_places=2),
                   WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0, "maximum": 9999999999.99,
                                              "multipleOf": 0.01},
                                             {"type": "string", "pattern": AMOUNT_PATTERN}],
                                   "description": "at most 2 decimals", "examples": [19.99]})]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")]
DEFAULT_CURRENCY = "USD"


def to_minor(amount: Decimal) -> int:
    return int(amount.scaleb(2))


def to_major(minor: int) -> float:
    """For JSON: 1999 → 19.99 (exact for any amount an API client can send)."""
    return float(Decimal(minor).scaleb(-2))


def pays(owed_minor: int, owed_currency: str, paid_minor: int | None, paid_currency: str | None) -> str | None:
    """Why `paid` does not pay exactly what is owed, or None (a report without an amount or a
    currency confirms the one asked for). Currencies compare as ISO codes, in any case."""
    if (paid_minor is None or paid_minor == owed_minor) and (paid_currency is None
                                                              or paid_currency.upper() == owed_currency.upper()):
        return None
    return f"{paid_minor} {paid_currency} does not match {owed_minor} {owed_currency}"
