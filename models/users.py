"""Users and auth request/response bodies."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from .auth import Role


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)
    email: EmailStr
    password: str = Field(min_length=8, max_length=128)


class UserOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    id: str = Field(alias="_id")
    email: str
    role: Role
    createdAt: str | None = None


class SignupOut(BaseModel):
    message: str
    user: UserOut


class LoginOut(BaseModel):
    message: str
    token: str
