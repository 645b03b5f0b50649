"""Users and auth request/response bodies."""
from __future__ import annotations

import re
import unicodedata
from typing import Annotated

import regex
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .auth import Role

# What signup accepts, exactly as the OpenAPI document says it (a generated client, or a fuzzer,
# learns the rule from the document): a plain address with a dotted domain and a letter TLD.
EMAIL_PATTERN = (r"^[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
                 r"[A-Za-z]{2,63}$")


def _lower_domain(email: str) -> str:
    local, _, domain = email.rpartition("@")
    return f"{local}@{domain.lower()}"


_IGNORABLE = regex.compile(r"\p{Default_Ignorable_Code_Point}")


def canonical_email(email: str) -> str:
    """One spelling per address as a case-insensitive lookup may equate them: NFKC (full-width
    letters, the long s), case-folded, with default-ignorable code points (soft hyphen, zero-width
    space) removed. Per-address limits are keyed by it when no account has the address."""
    folded = _IGNORABLE.sub("", unicodedata.normalize("NFKC", email.strip())).casefold()
    return unicodedata.normalize("NFKC", folded)  # (case folding can leave a string not in NFKC)


def is_plain_email(email: str) -> bool:
    """The address shape the shop makes accounts for (signup's pattern)."""
    return len(email) <= 254 and re.fullmatch(EMAIL_PATTERN, email) is not None


Email = Annotated[str, Field(pattern=EMAIL_PATTERN, max_length=254, examples=["ada@shop.example"]),
                  AfterValidator(_lower_domain)]


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)
    email: Email
    password: str = Field(min_length=8, max_length=128)


class LoginIn(BaseModel):
    """Login does not judge the password's shape: that would leak the policy and lock out
    accounts made under another one. A wrong password is 401, whatever it looks like (and so is
    an address nobody signed up with, whatever its shape)."""
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)
    email: str = Field(min_length=1, max_length=254)
    password: str = Field(min_length=1, max_length=1024)
    unlockToken: str | None = Field(None, min_length=1, max_length=128,
                                    description="from the unlock mail: this login is not held back")


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
    emailVerified: bool = Field(False, description="the owner followed the mailed link (or a provider vouched)")
    hasPassword: bool = True
    identities: list[str] = Field(default_factory=list, description="sign-in providers linked to the account")


class UserChanged(BaseModel):
    message: str
    user: UserOut


class IdentityUnlinked(BaseModel):
    message: str
    user: UserOut
    token: str = Field(description="a new token: every token issued before the unlink is void")


class AccountToken(BaseModel):
    """A token from an account mail's link."""
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=128)


class ForgotPassword(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=1, max_length=254)


class PasswordReset(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)
    token: str = Field(min_length=1, max_length=128)
    newPassword: str = Field(min_length=8, max_length=128)


class LinkStarted(BaseModel):
    message: str
    authorizationUrl: str = Field(description="send the browser here; the provider returns it to the callback")


class SignupOut(BaseModel):
    message: str
    user: UserOut


class LoginOut(BaseModel):
    message: str
    token: str


class PasswordChanged(BaseModel):
    message: str
    token: str = Field(description="a new token: every token issued before the change is void")


class SignInCallback(BaseModel):
    """What a provider sends back (as a query, or, Apple's `form_post`, as a form): a code and
    our state, or an error. Apple adds `user` (the name, first time only), which we do not keep."""
    code: str | None = Field(None, max_length=2048)
    state: str | None = Field(None, max_length=512)
    error: str | None = Field(None, max_length=256)
    error_description: str | None = Field(None, max_length=1024)
    user: str | None = Field(None, max_length=4096, description="Apple only: the name, on first sign-in")
