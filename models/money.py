"""Money: integer minor units in storage, decimal major units in the API (at most 2 decimals)."""
from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import Field

# Accepted from clients: ≥ 0, at most 2 decimals (19.999 is a 400, not a silent rounding).
Amount = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")]
DEFAULT_CURRENCY = "USD"


def to_minor(amount: Decimal) -> int:
    return int(amount.scaleb(2))


def to_major(minor: int) -> float:
    """For JSON: 1999 → 19.99 (exact for any amount an API client can send)."""
    return float(Decimal(minor).scaleb(-2))
