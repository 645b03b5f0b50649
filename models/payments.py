"""Payment bodies shared by the payments service and its clients."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator

from .ids import ObjectIdStr
from .money import Amount
from .pagination import MAX_LIMIT, PageQuery

PaymentMethod = Literal["stripe", "paypal", "mpesa", "card"]


class StripeData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paymentMethodId: str | None = Field(None, pattern=r"^pm_[A-Za-z0-9_]{1,100}$")


class PayPalData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    returnUrl: HttpUrl
    cancelUrl: HttpUrl


class MpesaData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    phoneNumber: str

    @field_validator("phoneNumber")
    @classmethod
    def _kenyan_msisdn(cls, value: str) -> str:
        """07XXXXXXXX, 01XXXXXXXX, +2547…, 2547… → 2547XXXXXXXX / 2541XXXXXXXX."""
        digits = value.replace(" ", "").replace("-", "").removeprefix("+")
        if digits.startswith("0") and len(digits) == 10:
            digits = "254" + digits[1:]
        if not (len(digits) == 12 and digits.isdigit() and digits[:4] in ("2547", "2541")):
            raise ValueError("must be a Kenyan mobile number, e.g. 0712345678 or 254712345678")
        return digits


DATA_MODELS: dict[str, type[BaseModel]] = {"stripe": StripeData, "card": StripeData, "paypal": PayPalData,
                                           "mpesa": MpesaData}


class InitiateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
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
