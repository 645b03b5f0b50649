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
    """Which paymentData goes with which paymentMethod, for clients and fuzzers alike."""
    def data(model: type[BaseModel]) -> dict[str, Any]:
        return model.model_json_schema()
    schema["oneOf"] = [
        {"properties": {"paymentMethod": {"enum": ["stripe", "card"]}, "paymentData": data(StripeData)}},
        {"properties": {"paymentMethod": {"const": "paypal"}, "paymentData": data(PayPalData)},
         "required": ["paymentData"]},
        {"properties": {"paymentMethod": {"const": "mpesa"}, "paymentData": data(MpesaData)},
         "required": ["paymentData"]}]


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
