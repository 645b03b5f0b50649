"""Who a token speaks for: its claims (issued and checked by `web.tokens`)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Role = Literal["user", "admin"]


class Claims(BaseModel):
    model_config = ConfigDict(frozen=True)  # one verified token's claims are shared by its requests

    email: str
    userId: str
    role: Role
    iat: int
    exp: int
    sid: str
    gen: int
