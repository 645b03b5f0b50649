"""Product bodies: what admins send, what everyone reads, and the list query."""
from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from .jsontypes import json_int
from .money import Amount, Currency
from .pagination import PageQuery, Pagination

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Sku = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9._-]{1,64}$")]
Category = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
# an image we stored (an upload) or one on the web over https; nothing else reaches a shopper's page
# JSON types are exact (false is not 0, "5" is not 5), as the document says; forms are converted
# before validation (base/routes/products.py)
Stock = json_int(ge=0, le=1_000_000_000)
ImageRef = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500,
                                            pattern=r"^(/uploads/[0-9a-f]{32}\.(jpg|png|webp)|https://[^\s\"'<>]+)$")]


class ProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    price: Amount
    currency: Currency = "USD"
    description: str = Field("", max_length=2000)
    category: Category = "general"
    stock: Stock = 0
    sku: Sku | None = None
    isActive: StrictBool = True
    productImage: ImageRef | None = None


class ProductPatch(BaseModel):
    """Only the fields sent change. `null` clears the two optional ones (sku, productImage) and is
    refused for the others: a product never loses its name or price to a PATCH."""
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})
    name: Name = None  # type: ignore[assignment]  # absent = unchanged; null is refused
    price: Amount = None  # type: ignore[assignment]
    currency: Currency = None  # type: ignore[assignment]
    description: str = Field(None, max_length=2000)  # type: ignore[assignment]
    category: Category = None  # type: ignore[assignment]
    stock: Stock = None  # type: ignore[assignment]
    sku: Sku | None = None
    isActive: StrictBool = None  # type: ignore[assignment]
    productImage: ImageRef | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> ProductPatch:
        if not self.model_fields_set:
            raise ValueError("send at least one field to change")
        return self


class ProductOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    id: str = Field(alias="_id")
    name: str
    price: float
    currency: str
    description: str
    category: str
    stock: int
    sku: str | None
    isActive: bool
    productImage: str | None
    createdAt: str
    updatedAt: str


# a filter bound, not an amount to charge: any non-negative number
PriceFilter = Annotated[Decimal, Field(ge=0, le=10_000_000_000, allow_inf_nan=False),
                        WithJsonSchema({"type": "number", "minimum": 0, "maximum": 10_000_000_000})]


class ProductQuery(PageQuery):
    category: Category | None = None
    search: str | None = Field(None, max_length=200)
    minPrice: PriceFilter | None = None
    maxPrice: PriceFilter | None = None
    sort: Literal["price_asc", "price_desc", "name", "newest"] = "newest"
    showInactive: bool = False


class ProductList(BaseModel):
    count: int
    total: int
    products: list[ProductOut]
    pagination: Pagination


class StockHold(BaseModel):
    orderId: str
    quantity: int


class StockLevels(BaseModel):
    """`GET /products/:id/stock`: inventory as its authority (the ProductStock object) sees it."""
    productId: str
    stock: int
    held: int
    holds: list[StockHold]


class ProductDeleted(BaseModel):
    message: str
    product: ProductOut
