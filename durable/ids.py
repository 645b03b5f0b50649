"""Durable Object ids: 64 hex characters, deterministic for names, random otherwise.

The first 56 are the id proper (an HMAC of the name, or random); the last 8 are a MAC of those
with the namespace's key, so `id_from_string` knows an id of another namespace and refuses it,
as Cloudflare does.
"""
from __future__ import annotations

import hashlib
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


BODY_HEX = 56  # the id proper; the remaining 8 hex characters mark its namespace


def namespace_key(script_name: str, class_name: str) -> bytes:
    """The key a namespace's ids derive from (`class_name`: the name the class was created with)."""
    return hashlib.sha256(f"{script_name}\x00{class_name}".encode()).digest()


def _mark(namespace_key: bytes, body: str) -> str:
    return hmac.digest(namespace_key, body.encode("ascii"), "sha256")[:4].hex()


def _made(namespace_key: bytes, body: str, name: str | None = None) -> DurableObjectId:
    made = DurableObjectId.__new__(DurableObjectId)  # well formed by construction: no need to check it
    made._hex = body + _mark(namespace_key, body)
    made.name = name
    return made


def id_from_name(namespace_key: bytes, name: str) -> DurableObjectId:
    """Same name, same namespace → same id, in every process (HMAC keyed by the namespace)."""
    if not isinstance(name, str):
        raise TypeError(f"id_from_name() takes a str, got {type(name).__name__}")
    return _made(namespace_key, hmac.digest(namespace_key, name.encode("utf-8"), "sha256").hex()[:BODY_HEX], name)


def new_unique_id(namespace_key: bytes) -> DurableObjectId:
    return _made(namespace_key, secrets.token_hex(BODY_HEX // 2))


def id_from_string(namespace_key: bytes, value: str) -> DurableObjectId:
    """An id from its string; one made by another namespace (or mistyped) is refused."""
    parsed = DurableObjectId(value.lower() if isinstance(value, str) else value)
    if not hmac.compare_digest(parsed._hex[BODY_HEX:], _mark(namespace_key, parsed._hex[:BODY_HEX])):
        raise ValueError("Durable Object ID is not valid for this namespace")
    return parsed


def remark(namespace_key: bytes, stored: str) -> str:
    """An id stored before ids carried their namespace's mark, as it is now (the same body, so
    the same shard); an id that already has it comes back unchanged."""
    return stored[:BODY_HEX] + _mark(namespace_key, stored[:BODY_HEX])
