"""Users and auth request/response bodies."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from .auth import Role


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)
    email: EmailStr
    password: str = Field(min_length=8, max_length=128)


class LoginIn(BaseModel):
    """Login does not judge the password's shape: that would leak the policy and lock out
    accounts made under another one. A wrong password is 401, whatever it looks like."""
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)
    email: EmailStr
    password: str = Field(min_length=1, max_length=1024)


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)
    currentPassword: str = Field(min_length=1, max_length=1024)
    newPassword: str = Field(min_length=8, max_length=128)


class RoleChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role


class LogoutQuery(BaseModel):
    all: bool = Field(False, description="end every session of this account, not only this token's")


class MessageOut(BaseModel):
    message: str


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


class PasswordChanged(BaseModel):
    message: str
    token: str = Field(description="a new token: every token issued before the change is void")
