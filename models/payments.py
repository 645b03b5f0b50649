"""Payment bodies shared by the payments service and its clients."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator

from .ids import ObjectIdStr
from .money import Amount
from .pagination import MAX_LIMIT, PageQuery, Pagination

PaymentMethod = Literal["stripe", "paypal", "mpesa", "card"]


class StripeData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paymentMethodId: str | None = Field(None, pattern=r"^pm_[A-Za-z0-9_]{1,100}$")


class PayPalData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    returnUrl: HttpUrl
    cancelUrl: HttpUrl


# a Kenyan mobile number as people write it: 0712 345678, +254-712-345678, 254712345678
KENYAN_MOBILE = r"^(?:\+?254|0)[ -]?[17](?:[ -]?[0-9]){8}$"


class MpesaData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    phoneNumber: str = Field(pattern=KENYAN_MOBILE, examples=["0712345678"])

    @field_validator("phoneNumber")
    @classmethod
    def _kenyan_msisdn(cls, value: str) -> str:
        """→ 2547XXXXXXXX / 2541XXXXXXXX (the pattern already held)."""
        digits = value.replace(" ", "").replace("-", "").removeprefix("+")
        return "254" + digits[1:] if digits.startswith("0") else digits


DATA_MODELS: dict[str, type[BaseModel]] = {"stripe": StripeData, "card": StripeData, "paypal": PayPalData,
                                           "mpesa": MpesaData}


def _initiate_schema(schema: dict[str, Any]) -> None:
    """One object shape per payment method (which paymentData goes with which paymentMethod),
    each complete, so clients and fuzzers alike can build exactly the bodies we take."""
    common = schema["properties"]

    def variant(title: str, methods: list[str], data: type[BaseModel], data_required: bool) -> dict[str, Any]:
        return {"title": title, "type": "object", "additionalProperties": False,
                "required": ["orderId", "paymentMethod", *(["paymentData"] if data_required else [])],
                "properties": {"orderId": common["orderId"], "paymentMethod": {"type": "string", "enum": methods},
                               "paymentData": data.model_json_schema()}}
    variants = [variant("CardPayment", ["card", "stripe"], StripeData, False),
                variant("PayPalPayment", ["paypal"], PayPalData, True),
                variant("MpesaPayment", ["mpesa"], MpesaData, True)]
    schema.clear()
    schema.update({"title": "InitiateIn", "oneOf": variants})


class InitiateIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_initiate_schema)
    orderId: ObjectIdStr
    paymentMethod: PaymentMethod
    paymentData: dict[str, Any] = Field(default_factory=dict)

    def method_data(self) -> BaseModel:
        return DATA_MODELS[self.paymentMethod].model_validate(self.paymentData)


class RefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Amount | None = Field(None, description="major units; omit for a full refund")
    reason: str | None = Field(None, max_length=200)


class HistoryQuery(PageQuery):
    limit: int = Field(10, ge=1, le=MAX_LIMIT)
    userId: ObjectIdStr | None = None


class PaymentOut(BaseModel):
    """A payment record as clients see it (`payments/stores/payments.payment_out`)."""
    model_config = ConfigDict(populate_by_name=True)
    id: str = Field(alias="_id")
    orderId: str
    userId: str
    paymentMethod: str
    provider: str
    status: str
    amount: float
    currency: str
    transactionId: str | None = None
    refundedAmount: float
    failureReason: str | None = None
    createdAt: str
    updatedAt: str


class PaymentList(BaseModel):
    count: int
    total: int
    payments: list[PaymentOut]
    pagination: Pagination


class PaymentReply(BaseModel):
    """`GET /payments/:id`, `/payments/verify/:id`."""
    payment: PaymentOut


class InitiateOut(BaseModel):
    """`POST /payments/initiate` → 201 (a replay with the same key answers the same, with
    `Idempotent-Replayed: true`). `paymentDetails` is what the client does next: a Stripe
    clientSecret to confirm, a PayPal approvalUrl to send the shopper to, an M-Pesa prompt."""
    message: str
    payment: PaymentOut
    paymentDetails: dict[str, Any] | None = None


class RefundOut(BaseModel):
    message: str
    payment: PaymentOut
