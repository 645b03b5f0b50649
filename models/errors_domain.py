"""Domain errors that cross Durable Object RPC as themselves (registered with the runtime)."""
from __future__ import annotations

from durable import ObjectUnavailable, register_error


@register_error
class NotFound(Exception):
    """The thing does not exist (or is not visible to the caller)."""


@register_error
class Conflict(Exception):
    """The request conflicts with the current state (illegal transition, already paid...)."""


@register_error
class InsufficientStock(Exception):
    """Message is `<productId>:<available>:<requested>` so it survives RPC as one string."""

    @classmethod
    def of(cls, product_id: str, available: int, requested: int) -> InsufficientStock:
        return cls(f"{product_id}:{available}:{requested}")

    def parts(self) -> tuple[str, int, int]:
        product_id, available, requested = str(self).split(":")
        return product_id, int(available), int(requested)


@register_error
class UnpaidLimit(Conflict):
    """The shopper holds as many unpaid orders (or units) as allowed. Message is
    `<orders>:<units>:<max_orders>:<max_units>:<requested>` so it survives RPC as one string."""

    @classmethod
    def of(cls, orders: int, units: int, max_orders: int, max_units: int, requested: int) -> UnpaidLimit:
        return cls(f"{orders}:{units}:{max_orders}:{max_units}:{requested}")

    def parts(self) -> tuple[int, int, int, int, int]:
        orders, units, max_orders, max_units, requested = (int(part) for part in str(self).split(":"))
        return orders, units, max_orders, max_units, requested


@register_error
class Unprocessable(Exception):
    """Well-formed but semantically wrong (amount or currency mismatch...)."""


@register_error
class DatabaseUnavailable(Exception):
    """The database did not answer in time (down, unreachable): retry later; nothing was applied."""


@register_error
class OrderVoided(ObjectUnavailable):
    """This attempt to create an order was undone (its node was cut off mid-way) before its write
    reached the database: nothing was created; the client may try again (a retryable 503)."""
