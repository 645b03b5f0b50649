"""What an R2 bucket keeps, whatever keeps it: an index of object records (one per key, swapped
whole by compare-and-set on its version) and blobs (an object's bytes, written once under a new
id, never changed). `R2Bucket` (bucket.py) holds every rule of R2's API; a store only keeps.

Three stores: files under the state directory (files.py: one host), MongoDB GridFS (mongo.py:
every node of a cluster, `wrangler dev --nodes` included) and any S3-compatible service (s3.py:
when the bucket's config names one).
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

CHUNK = 256 * 1024  # bytes a read or write moves at a time: a 50 MB value never sits whole in memory


class BlobGone(Exception):
    """The blob was replaced (and removed) after its record was read: read the record again."""


@dataclass(frozen=True)
class Record:
    """One object as stored: R2's metadata, plus the blob holding its bytes."""

    key: str
    version: str
    blob: str
    size: int
    etag: str
    uploaded_ms: int
    http_metadata: dict[str, Any] = field(default_factory=dict)
    custom_metadata: dict[str, str] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)
    storage_class: str = "Standard"

    def to_doc(self) -> dict[str, Any]:
        return {"key": self.key, "version": self.version, "blob": self.blob, "size": self.size, "etag": self.etag,
                "uploaded_ms": self.uploaded_ms, "http_metadata": self.http_metadata,
                "custom_metadata": self.custom_metadata, "checksums": self.checksums,
                "storage_class": self.storage_class}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Record:
        return cls(**{name: doc[name] for name in cls.__dataclass_fields__ if name in doc})


@dataclass(frozen=True)
class Upload:
    """A multipart upload in progress: where it will land and with what metadata."""

    upload_id: str
    key: str
    http_metadata: dict[str, Any]
    custom_metadata: dict[str, str]
    created_ms: int


@dataclass(frozen=True)
class Part:
    number: int
    blob: str
    size: int
    etag: str  # md5 hex of the part's bytes


class Store(Protocol):
    """A bucket's storage. Records change only through `swap`; blobs are immutable."""

    async def head(self, key: str) -> Record | None: ...

    async def swap(self, key: str, expected_version: str | None, new: Record | None) -> bool:
        """Replace `key`'s record (None: delete it) if its version is still `expected_version`
        (None: there is no record); False when another writer got there first."""
        ...

    async def list(self, prefix: str, after: str, limit: int) -> list[Record]:
        """Records with `prefix` whose key sorts after `after`, in key order (code points), at most `limit`."""
        ...

    async def write_blob(self, blob: str, chunks: AsyncIterator[bytes]) -> int:
        """Store the bytes under a new id; their size."""
        ...

    def read_blob(self, blob: str, offset: int, length: int) -> AsyncIterator[bytes]:
        """`length` bytes from `offset`, in chunks; raises BlobGone if the blob was removed."""
        ...

    async def delete_blob(self, blob: str) -> None: ...

    async def retire(self, blob: str, due_ms: int) -> None:
        """Remove the blob once `due_ms` passed (a reader may still be streaming it)."""
        ...

    async def sweep(self, now_ms: int) -> list[str]:
        """The retired blobs now due, forgotten as they are returned (the caller deletes them)."""
        ...

    async def create_upload(self, upload: Upload) -> None: ...

    async def get_upload(self, upload_id: str) -> Upload | None: ...

    async def put_part(self, upload_id: str, part: Part) -> Part | None:
        """Record an uploaded part (replacing one of the same number); the one it replaced."""
        ...

    async def parts(self, upload_id: str) -> list[Part]: ...

    async def end_upload(self, upload_id: str) -> bool:
        """Forget the upload (completed or aborted); False if it was not there."""
        ...

    async def close(self) -> None: ...
