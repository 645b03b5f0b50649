"""Paginated lists: `?page=&limit=` in, `count`, `total`, `pagination{page,limit,pages}` out."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_LIMIT = 100


class PageQuery(BaseModel):
    """`?page=&limit=` of every list route (limit capped at 100); subclasses add their filters."""

    model_config = ConfigDict(extra="forbid")
    page: int = Field(1, ge=1, le=100_000)
    limit: int = Field(20, ge=1, le=MAX_LIMIT)

    @property
    def skip(self) -> int:
        return (self.page - 1) * self.limit


class Pagination(BaseModel):
    page: int
    limit: int
    pages: int

    @classmethod
    def of(cls, page: int, limit: int, total: int) -> Pagination:
        return cls(page=page, limit=limit, pages=(total + limit - 1) // limit)
