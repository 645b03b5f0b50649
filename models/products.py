"""Product bodies: what admins send, what everyone reads, and the list query."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from .money import Amount, Currency
from .pagination import PageQuery, Pagination

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Sku = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9._-]{1,64}$")]
Category = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
# an image we stored (an upload) or one on the web over https; nothing else reaches a shopper's page
ImageRef = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500,
                                            pattern=r"^(/uploads/[0-9a-f]{32}\.(jpg|png)|https://[^\s\"'<>]+)$")]


class ProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    price: Amount
    currency: Currency = "USD"
    description: str = Field("", max_length=2000)
    category: Category = "general"
    stock: int = Field(0, ge=0, le=1_000_000_000)
    sku: Sku | None = None
    isActive: bool = True
    productImage: ImageRef | None = None


class ProductPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    price: Amount | None = None
    currency: Currency | None = None
    description: str | None = Field(None, max_length=2000)
    category: Category | None = None
    stock: int | None = Field(None, ge=0, le=1_000_000_000)
    sku: Sku | None = None
    isActive: bool | None = None
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


class ProductQuery(PageQuery):
    category: Category | None = None
    search: str | None = Field(None, max_length=200)
    minPrice: Amount | None = None
    maxPrice: Amount | None = None
    sort: Literal["price_asc", "price_desc", "name", "newest"] = "newest"
    showInactive: bool = False


class ProductList(BaseModel):
    count: int
    total: int
    products: list[ProductOut]
    pagination: Pagination
