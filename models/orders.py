"""Order bodies and the order state machine shared by base (OrderLock) and payments."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .ids import ObjectIdStr
from .money import Currency
from .pagination import MAX_LIMIT, PageQuery, Pagination

OrderStatus = Literal["pending", "confirmed", "processing", "shipped", "delivered", "cancelled"]
PaymentStatus = Literal["pending", "paid", "failed", "refunded"]

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
    quantity: int = Field(1, ge=1, le=100)


class Address(BaseModel):
    model_config = ConfigDict(extra="forbid")
    line1: str = Field(min_length=1, max_length=200)
    line2: str | None = Field(None, max_length=200)
    city: str = Field(min_length=1, max_length=100)
    postalCode: str | None = Field(None, max_length=20)
    country: str = Field(min_length=2, max_length=2, description="ISO 3166-1 alpha-2")


class OrderIn(BaseModel):
    """Either one product (`productId`, `quantity`) or `items` for a multi-product order."""

    model_config = ConfigDict(extra="forbid")
    productId: ObjectIdStr | None = None
    quantity: int = Field(1, ge=1, le=100)
    items: list[OrderItemIn] | None = Field(None, min_length=1, max_length=20)
    currency: Currency | None = None
    shippingAddress: Address | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> OrderIn:
        if (self.productId is None) == (self.items is None):
            raise ValueError("send either productId (and quantity) or items, not both")
        if self.items is not None and len({i.productId.lower() for i in self.items}) != len(self.items):
            raise ValueError("each product may appear once in items")
        return self

    def lines(self) -> list[dict[str, Any]]:
        if self.items is not None:
            return [{"productId": i.productId.lower(), "quantity": i.quantity} for i in self.items]
        assert self.productId is not None
        return [{"productId": self.productId.lower(), "quantity": self.quantity}]


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
