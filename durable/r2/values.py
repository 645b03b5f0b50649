"""What R2 hands back (`R2Object`, `R2ObjectBody`, `R2Objects`) and how values stream in:
chunks from any body, hashed on the way for the checksums R2 reports."""
from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import email.utils
import hashlib
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from .arguments import HTTP_FIELDS, R2Error
from .store import CHUNK, Record

# -- values -------------------------------------------------------------------------------

async def iter_chunks(value: Any) -> AsyncIterator[bytes]:
    """A put's value as chunks: text, bytes, an async or plain iterable of bytes, a readable."""
    if value is None:
        return
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        view = memoryview(value)
        for start in range(0, len(view), CHUNK):
            yield bytes(view[start:start + CHUNK])
        return
    if isinstance(value, R2ObjectBody):
        value = value.body
    if hasattr(value, "__aiter__"):
        async for chunk in value:
            yield chunk.encode() if isinstance(chunk, str) else bytes(chunk)
        return
    if hasattr(value, "read"):  # a file: read in a thread, never on the event loop
        while chunk := await asyncio.to_thread(value.read, CHUNK):
            yield bytes(chunk)
        return
    if isinstance(value, Iterable):
        for chunk in value:
            yield bytes(chunk)
        return
    raise TypeError("an R2 value is text, bytes, a stream or an iterable of bytes")


class Hashing:
    """Hashes the chunks as they pass on their way to the store."""

    def __init__(self, chunks: AsyncIterator[bytes], names: Iterable[str]) -> None:
        self.chunks = chunks
        self.hashes = {name: hashlib.new(name) for name in names}

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.chunks:
            for digest in self.hashes.values():
                digest.update(chunk)
            yield chunk


def expected_digest(operation: str, name: str, value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    text = str(value)
    try:
        bytes.fromhex(text)
        return text.lower()
    except ValueError:
        try:
            return base64.b64decode(text, validate=True).hex()
        except binascii.Error:
            raise R2Error(operation, f"The {name} checksum you specified is not valid.", 10014) from None


# -- objects ------------------------------------------------------------------------------

class R2Object:
    """An object's metadata (`head`, `put`, `list`, a `get` whose condition failed)."""

    def __init__(self, record: Record, range_: tuple[int, int] | None = None, include: set[str] | None = None) -> None:
        self._record = record
        self.key = record.key
        self.version = record.version
        self.size = record.size
        self.etag = record.etag
        self.httpEtag = self.http_etag = f'"{record.etag}"'
        self.uploaded = dt.datetime.fromtimestamp(record.uploaded_ms / 1000, dt.UTC)
        every = include is None
        self.httpMetadata = self.http_metadata = (_public_http(record.http_metadata)
                                                  if every or "httpMetadata" in include else None)  # type: ignore[operator]
        self.customMetadata = self.custom_metadata = (dict(record.custom_metadata)
                                                      if every or "customMetadata" in include else None)  # type: ignore[operator]
        self.checksums = dict(record.checksums)
        self.storageClass = self.storage_class = record.storage_class
        self.range = {"offset": range_[0], "length": range_[1]} if range_ is not None else None

    def writeHttpMetadata(self, headers: Any) -> None:
        """Set the stored HTTP metadata on `headers` (a mutable mapping), as R2's does."""
        if self.httpMetadata is None:
            raise TypeError(f"HTTP metadata unknown for key `{self.key}`. Did you forget to add 'httpMetadata' "
                            "to `include` when listing?")
        for name, value in self.httpMetadata.items():
            headers[HTTP_FIELDS[name]] = (email.utils.format_datetime(value, usegmt=True)
                                           if isinstance(value, dt.datetime) else value)

    write_http_metadata = writeHttpMetadata

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    def __repr__(self) -> str:
        return f"<R2Object {self.key!r} size={self.size} etag={self.etag}>"


def _public_http(stored: dict[str, Any]) -> dict[str, Any]:
    out = dict(stored)
    if "cacheExpiry" in out:
        out["cacheExpiry"] = dt.datetime.fromtimestamp(out["cacheExpiry"], dt.UTC)
    return out


class R2ObjectBody(R2Object):
    """An object with its bytes: `body` streams them once; `bytes()`, `text()`, `json()` read them all."""

    def __init__(self, record: Record, chunks: AsyncIterator[bytes], range_: tuple[int, int] | None) -> None:
        super().__init__(record, range_)
        self._chunks = chunks
        self.bodyUsed = self.body_used = False

    @property
    def body(self) -> AsyncIterator[bytes]:
        if self.bodyUsed:
            raise TypeError("the body was already read")
        self.bodyUsed = self.body_used = True
        return self._chunks

    async def arrayBuffer(self) -> bytes:
        return b"".join([chunk async for chunk in self.body])

    array_buffer = bytes = arrayBuffer

    async def text(self) -> str:
        return (await self.arrayBuffer()).decode()

    async def json(self) -> Any:
        return json.loads(await self.arrayBuffer())


class R2Objects(dict):  # type: ignore[type-arg]
    """A `list` page: `objects`, `truncated`, `cursor` (when truncated), `delimitedPrefixes`."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


async def prepend(first: bytes | None, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The first chunk (read to know the blob was there), then the rest; closing it closes the
    store's reader too (its file or stream), whether or not it was read to the end."""
    try:
        if first is not None:
            yield first
            async for chunk in rest:
                yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]
