"""`env.MY_BUCKET`: Cloudflare R2's Workers API (`r2_buckets` in the config) over a `Store`.

Cloudflare's camelCase names and snake_case ones, JavaScript-style option objects
(`put(key, value, {"httpMetadata": {...}, "onlyIf": {...}})`) or keywords. Values stream in and
out in chunks (a 50 MB object never sits whole in memory); an overwrite swaps the key's record by
compare-and-set, so a conditional put is atomic, and the bytes it replaced are removed a while
later (a reader may still be streaming them). ARCHITECTURE.md, R2 buckets.
"""
from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from .arguments import (
    HASHES,
    MAX_DELETE,
    MAX_LIST,
    RETIRE_AFTER_MS,
    R2Error,
    check_key,
    clock_ms,
    custom_metadata_of,
    http_metadata_of,
    parse_options,
)
from .conditions import Conditional, parse_conditional, parse_range, passes
from .multipart import R2MultipartUpload
from .store import BlobGone, Record, Store, Upload
from .values import (
    Hashing,
    R2Object,
    R2ObjectBody,
    R2Objects,
    expected_digest,
    iter_chunks,
    prepend,
)

# -- the bucket ---------------------------------------------------------------------------

class R2Bucket:
    def __init__(self, name: str, store: Store, retire_after_ms: int = RETIRE_AFTER_MS) -> None:
        self.name = name
        self.store = store
        self.retire_after_ms = retire_after_ms

    def __repr__(self) -> str:
        return f"<R2Bucket {self.name}>"

    async def head(self, key: str) -> R2Object | None:
        record = await self.store.head(check_key("head", key))
        return None if record is None else R2Object(record, (0, record.size))

    async def get(self, key: str, options: Mapping[str, Any] | None = None, **keywords: Any) -> R2Object | None:
        """The object and its bytes (a range of them if asked), None if there is none, or its
        metadata alone (no `body`) when `onlyIf` does not hold."""
        check_key("get", key)
        opts = parse_options(options, keywords)
        condition = parse_conditional(opts.get("onlyIf"))
        for _ in range(3):  # the record read, then its bytes: an overwrite between the two reads again
            record = await self.store.head(key)
            if record is None:
                return None
            if not passes(condition, record):
                return R2Object(record, (0, record.size))
            span = parse_range("get", opts.get("range"), record.size) or (0, record.size)
            offset, length = span
            chunks = self.store.read_blob(record.blob, offset, length)
            try:
                first = await anext(chunks, None)
            except BlobGone:
                continue
            return R2ObjectBody(record, prepend(first, chunks), span)
        raise R2Error("get", "We encountered an internal error. Please try again.", 10001)

    async def put(self, key: str, value: Any, options: Mapping[str, Any] | None = None,
                  **keywords: Any) -> R2Object | None:
        """Store `value` under `key`; None (nothing written) when `onlyIf` does not hold."""
        check_key("put", key)
        opts = parse_options(options, keywords)
        condition = parse_conditional(opts.get("onlyIf"))
        http = http_metadata_of(opts.get("httpMetadata"))
        custom = custom_metadata_of("put", opts.get("customMetadata"))
        expected = {name: expected_digest("put", name, opts[name]) for name in HASHES if opts.get(name) is not None}
        if len(expected) > 1:
            raise TypeError("You cannot specify multiple hashing algorithms.")
        if condition is not None and not passes(condition, await self.store.head(key)):
            return None  # refused before a byte is stored; checked again at the swap
        version = secrets.token_hex(16)
        hashing = Hashing(iter_chunks(value), {"md5", *expected})
        size = await self.store.write_blob(version, aiter(hashing))
        digests = {name: digest.hexdigest() for name, digest in hashing.hashes.items()}
        for name, want in expected.items():
            if digests[name] != want:
                await self.store.delete_blob(version)
                raise R2Error("put", f"The {name.upper().replace('SHA', 'SHA-')} checksum you specified did not "
                                     "match what we received.", 10037)
        record = Record(key, version, version, size, digests["md5"], clock_ms(), http, custom,
                        {name: digests[name] for name in {"md5", *expected}},
                        str(opts.get("storageClass") or "Standard"))
        if not await self.install(record, condition):
            await self.store.delete_blob(version)
            return None
        return R2Object(record)

    async def install(self, record: Record, condition: Conditional | None) -> bool:
        """Swap the key's record for `record` if `condition` holds for the one it replaces."""
        while True:
            current = await self.store.head(record.key)
            if not passes(condition, current):
                return False
            if await self.store.swap(record.key, current.version if current else None, record):
                if current is not None:
                    await self.retire(current.blob)
                return True

    async def retire(self, blob: str) -> None:
        now = clock_ms()
        await self.store.retire(blob, now + self.retire_after_ms)
        for due in await self.store.sweep(now):
            await self.store.delete_blob(due)

    async def delete(self, keys: str | Iterable[str]) -> None:
        """Delete one key or many (up to 1,000); keys that do not exist are no error."""
        many = [keys] if isinstance(keys, str) else list(keys)
        if len(many) > MAX_DELETE:
            raise R2Error("delete", f"You can only delete up to {MAX_DELETE} keys at once.", 10020)
        for key in many:
            check_key("delete", key)
        for key in many:
            while (current := await self.store.head(key)) is not None:
                if await self.store.swap(key, current.version, None):
                    await self.retire(current.blob)
                    break

    async def list(self, options: Mapping[str, Any] | None = None, **keywords: Any) -> R2Objects:
        """A page of keys in order: `prefix`, `delimiter` (keys below it folded into
        `delimitedPrefixes`), `startAfter`, `cursor`, `limit` (≤ 1,000: objects and prefixes
        together), `include` (`httpMetadata`, `customMetadata`: left out unless asked)."""
        opts = parse_options(options, keywords)
        limit = int(MAX_LIST if opts.get("limit") is None else opts["limit"])
        if not 1 <= limit <= MAX_LIST:
            raise R2Error("list", f"MaxKeys params must be positive integer <= {MAX_LIST}.", 10022)
        prefix = str(opts.get("prefix") or "")
        delimiter = opts.get("delimiter") or None
        include = set(opts.get("include") or ())
        for unknown in include - {"httpMetadata", "customMetadata"}:
            raise TypeError(f"Unsupported include value {unknown}")
        after = str(opts.get("startAfter") or "")
        if opts.get("cursor"):
            try:
                after = max(after, base64.urlsafe_b64decode(str(opts["cursor"]).encode()).decode())
            except (ValueError, UnicodeDecodeError):
                raise R2Error("list", "The continuation token provided is incorrect.", 10020) from None
        objects: list[R2Object] = []
        prefixes: list[str] = []
        truncated = False
        while not truncated:
            page = await self.store.list(prefix, after, limit + 1)
            if not page:
                break
            for record in page:
                if len(objects) + len(prefixes) == limit:
                    truncated = True
                    break
                rest = record.key[len(prefix):]
                cut = rest.find(delimiter) if delimiter else -1
                if cut >= 0:
                    folded = prefix + rest[:cut + len(delimiter)]
                    prefixes.append(folded)
                    after = folded + "\U0010ffff"  # past every key under it
                    break  # read on from there
                objects.append(R2Object(record, include=include))
                after = record.key
            else:
                if len(page) <= limit:
                    break
        result = R2Objects(objects=objects, truncated=truncated, delimitedPrefixes=prefixes)
        if truncated:
            result["cursor"] = base64.urlsafe_b64encode(after.encode()).decode()
        return result

    # -- multipart ------------------------------------------------------------------------
    async def createMultipartUpload(self, key: str, options: Mapping[str, Any] | None = None,
                                    **keywords: Any) -> R2MultipartUpload:
        check_key("createMultipartUpload", key)
        opts = parse_options(options, keywords)
        upload = Upload(secrets.token_urlsafe(24), key, http_metadata_of(opts.get("httpMetadata")),
                        custom_metadata_of("createMultipartUpload", opts.get("customMetadata")), clock_ms())
        await self.store.create_upload(upload)
        return R2MultipartUpload(self, key, upload.upload_id)

    create_multipart_upload = createMultipartUpload

    def resumeMultipartUpload(self, key: str, upload_id: str) -> R2MultipartUpload:
        return R2MultipartUpload(self, check_key("resumeMultipartUpload", key), upload_id)

    resume_multipart_upload = resumeMultipartUpload
