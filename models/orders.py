"""Order bodies and the order state machine shared by base (OrderLock) and payments."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .ids import ObjectIdStr
from .jsontypes import json_int
from .money import Currency
from .pagination import MAX_LIMIT, PageQuery, Pagination

OrderStatus = Literal["pending", "confirmed", "processing", "shipped", "delivered", "cancelled"]
PaymentStatus = Literal["pending", "paid", "failed", "refunded"]
Quantity = json_int(ge=1, le=100)

# Which status may follow which (payment failure keeps an order pending).
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"confirmed", "cancelled"}),
    "confirmed": frozenset({"processing", "cancelled"}),
    "processing": frozenset({"shipped"}),
    "shipped": frozenset({"delivered"}),
    "delivered": frozenset(),
    "cancelled": frozenset(),
}
ACTIVE = frozenset({"pending", "confirmed", "processing", "shipped"})


class OrderItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    productId: ObjectIdStr
    quantity: Quantity = 1


class Address(BaseModel):
    model_config = ConfigDict(extra="forbid")
    line1: str = Field(min_length=1, max_length=200)
    line2: str | None = Field(None, max_length=200)
    city: str = Field(min_length=1, max_length=100)
    postalCode: str | None = Field(None, max_length=20)
    country: str = Field(min_length=2, max_length=2, description="ISO 3166-1 alpha-2")


def _order_schema(schema: dict[str, Any]) -> None:
    """Two complete shapes (so a generated client gets two models): one product, or items."""
    props = schema["properties"]

    def shape(title: str, fields: list[str], required: str) -> dict[str, Any]:
        return {"title": title, "type": "object", "additionalProperties": False, "required": [required],
                "properties": {name: props[name] for name in fields}}
    defs = schema.get("$defs")
    schema.clear()
    schema.update({"title": "OrderIn", "oneOf": [
        shape("SingleProductOrder", ["productId", "quantity", "currency", "shippingAddress"], "productId"),
        shape("MultiProductOrder", ["items", "currency", "shippingAddress"], "items")]})
    if defs:
        schema["$defs"] = defs


class OrderIn(BaseModel):
    """Either one product (`productId`, `quantity`) or `items` for a multi-product order (the
    document says so with oneOf). Fields are left out rather than sent as null."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_order_schema)
    productId: ObjectIdStr = None  # type: ignore[assignment]  # absent, never null
    quantity: Quantity = 1
    items: list[OrderItemIn] = Field(None, min_length=1, max_length=20)  # type: ignore[assignment]
    currency: Currency = None  # type: ignore[assignment]
    shippingAddress: Address = None  # type: ignore[assignment]

    @model_validator(mode="after")
    def _one_shape(self) -> OrderIn:
        if (self.productId is None) == (self.items is None):
            raise ValueError("send either productId (and quantity) or items, not both")
        if self.items is not None and "quantity" in self.model_fields_set:
            raise ValueError("with items, each item has its own quantity")
        return self

    def lines(self) -> list[dict[str, Any]]:
        """One line per product: the same product twice in `items` is one line of both quantities."""
        if self.items is None:
            assert self.productId is not None
            return [{"productId": self.productId.lower(), "quantity": self.quantity}]
        merged: dict[str, int] = {}
        for item in self.items:
            merged[item.productId.lower()] = merged.get(item.productId.lower(), 0) + item.quantity
        return [{"productId": product_id, "quantity": quantity} for product_id, quantity in merged.items()]


class StatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: OrderStatus


class OrderQuery(PageQuery):
    limit: int = Field(10, ge=1, le=MAX_LIMIT)
    status: OrderStatus | None = None
    paymentStatus: PaymentStatus | None = None


class OrderItemOut(BaseModel):
    productId: str
    name: str
    unitPrice: float
    quantity: int
    lineTotal: float


class OrderOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    id: str = Field(alias="_id")
    userId: str
    product: str
    items: list[OrderItemOut]
    quantity: int
    totalAmount: float
    currency: str
    status: OrderStatus
    paymentStatus: PaymentStatus
    paymentId: str | None = None
    shippingAddress: Address | None = None
    expiresAt: str | None = None
    createdAt: str
    updatedAt: str


class OrderList(BaseModel):
    count: int
    total: int
    orders: list[OrderOut]
    pagination: Pagination


class RequestLink(BaseModel):
    type: str
    url: str


class OrderCreated(BaseModel):
    """`POST /orders` → 201."""
    message: str
    createdOrder: OrderOut
    request: RequestLink
