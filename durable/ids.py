"""Durable Object ids: 64 hex characters, deterministic for names, random otherwise."""
from __future__ import annotations

import hmac
import re
import secrets

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class DurableObjectId:
    """Identifies one object of one namespace; equal ids always reach the same live instance."""

    __slots__ = ("_hex", "name")

    def __init__(self, hex_id: str, name: str | None = None) -> None:
        if not isinstance(hex_id, str) or not _HEX64.match(hex_id):
            raise ValueError(f"Invalid Durable Object ID: expected 64 lowercase hex characters, got {hex_id!r}")
        self._hex = hex_id
        self.name = name

    def __str__(self) -> str:
        return self._hex

    def to_string(self) -> str:
        return self._hex

    def __repr__(self) -> str:
        suffix = f", name={self.name!r}" if self.name is not None else ""
        return f"DurableObjectId({self._hex[:12]}…{suffix})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DurableObjectId) and other._hex == self._hex

    def __hash__(self) -> int:
        return hash(self._hex)

    def equals(self, other: DurableObjectId) -> bool:
        return self == other


def id_from_name(namespace_key: bytes, name: str) -> DurableObjectId:
    """Same name, same namespace → same id, in every process (HMAC keyed by the namespace)."""
    if not isinstance(name, str):
        raise TypeError(f"id_from_name() takes a str, got {type(name).__name__}")
    made = DurableObjectId.__new__(DurableObjectId)  # a digest is well formed: no need to check it
    made._hex = hmac.digest(namespace_key, name.encode("utf-8"), "sha256").hex()
    made.name = name
    return made


def new_unique_id() -> DurableObjectId:
    return DurableObjectId(secrets.token_hex(32))


def id_from_string(value: str) -> DurableObjectId:
    return DurableObjectId(value.lower() if isinstance(value, str) else value)
