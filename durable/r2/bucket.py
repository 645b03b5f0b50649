"""`env.MY_BUCKET`: Cloudflare R2's Workers API (`r2_buckets` in the config) over a `Store`.

Cloudflare's camelCase names and snake_case ones, JavaScript-style option objects
(`put(key, value, {"httpMetadata": {...}, "onlyIf": {...}})`) or keywords. Values stream in and
out in chunks (a 50 MB object never sits whole in memory); an overwrite swaps the key's record by
compare-and-set, so a conditional put is atomic, and the bytes it replaced are removed a while
later (a reader may still be streaming them). ARCHITECTURE.md, R2 buckets.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import email.utils
import hashlib
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .store import CHUNK, BlobGone, Part, Record, Store, Upload

MAX_KEY_BYTES = 1024
MAX_CUSTOM_METADATA_BYTES = 8192  # R2's documented limit (keys and values, UTF-8)
MAX_LIST = 1000
MAX_DELETE = 1000
MIN_PART_BYTES = 5 * 1024 * 1024  # every part but the last
MAX_PARTS = 10000
RETIRE_AFTER_MS = 60_000  # replaced bytes outlive their record this long: reads under way finish
_DIGITS = re.compile(r"[0-9]+")  # ASCII digits only ("²".isdigit() is true)
_HASHES = ("md5", "sha1", "sha256", "sha384", "sha512")
_HTTP_FIELDS = {"contentType": "content-type", "contentLanguage": "content-language",
                "contentDisposition": "content-disposition", "contentEncoding": "content-encoding",
                "cacheControl": "cache-control", "cacheExpiry": "expires"}


class R2Error(Exception):
    """What R2 refuses, with its message and error code (as Workers' R2 errors read)."""

    def __init__(self, operation: str, message: str, code: int) -> None:
        self.operation, self.code = operation, code
        super().__init__(f"{operation}: {message} ({code})")


def _options(positional: Mapping[str, Any] | None, keywords: dict[str, Any]) -> dict[str, Any]:
    aliases = {"http_metadata": "httpMetadata", "custom_metadata": "customMetadata", "only_if": "onlyIf",
               "start_after": "startAfter", "storage_class": "storageClass"}
    return {aliases.get(k, k): v for k, v in {**dict(positional or {}), **keywords}.items()}


def _check_key(operation: str, key: Any) -> str:
    if not isinstance(key, str) or len(key.encode()) > MAX_KEY_BYTES:
        raise R2Error(operation, "The specified object name is not valid.", 10020)
    return key


def _header(headers: Any, name: str) -> str | None:
    """A header from a Headers-like mapping (any case)."""
    value = headers.get(name)
    if value is None:
        value = headers.get(name.title())
    return None if value is None else str(value)


def _is_headers(value: Any) -> bool:
    """Headers (a Request's, or a dict of header names) rather than an option object."""
    if not isinstance(value, Mapping):
        return hasattr(value, "get") and hasattr(value, "items")
    return any("-" in str(k) or str(k).lower() in ("range", "etag", "expires") for k in value)


def _http_metadata(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if _is_headers(value):
        found = {name: _header(value, header) for name, header in _HTTP_FIELDS.items()}
    else:
        unknown = set(value) - set(_HTTP_FIELDS)
        if unknown:
            raise TypeError(f"unknown httpMetadata field(s): {', '.join(sorted(unknown))}")
        found = dict(value)
    out: dict[str, Any] = {}
    for name, item in found.items():
        if item is None:
            continue
        if name == "cacheExpiry":
            when = item if isinstance(item, dt.datetime) else email.utils.parsedate_to_datetime(str(item))
            out[name] = when.astimezone(dt.UTC).timestamp()
        else:
            out[name] = str(item)
    return out


def _custom_metadata(operation: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    metadata = {str(k): str(v) for k, v in dict(value).items()}
    if sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items()) > MAX_CUSTOM_METADATA_BYTES:
        raise R2Error(operation, "Your metadata headers exceed the maximum allowed metadata size.", 10012)
    return metadata


# -- conditions ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Conditional:
    etag_matches: list[tuple[str, bool]] | None = None  # (etag or "*", weak)
    etag_does_not_match: list[tuple[str, bool]] | None = None
    uploaded_before_ms: int | None = None
    uploaded_after_ms: int | None = None
    seconds_granularity: bool = False


def _etags(value: Any) -> list[tuple[str, bool]] | None:
    """An option's etag: bare (a quoted one is a mistake R2 refuses), or "*"."""
    if value is None:
        return None
    etag = str(value)
    if etag.startswith(('"', 'W/"')):
        raise TypeError(f"Conditional ETag should not be wrapped in quotes ({etag}).")
    return [(etag, False)]


def _header_etags(value: str | None) -> list[tuple[str, bool]] | None:
    """A header's list: `"strong"`, `W/"weak"` or `*`, comma-separated."""
    if value is None:
        return None
    out = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        if part == "*":
            return [("*", False)]
        weak = part.startswith("W/")
        quoted = part[2:] if weak else part
        if len(quoted) < 2 or not (quoted.startswith('"') and quoted.endswith('"')):
            raise TypeError("Weak etags must start with W/ and their value must be quoted" if weak
                            else "Invalid conditional header")
        out.append((quoted[1:-1], weak))
    return out


def _ms(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, (int, float)):
        return int(value)
    try:
        return int(email.utils.parsedate_to_datetime(str(value)).timestamp() * 1000)
    except (TypeError, ValueError, OverflowError):
        raise TypeError(f"Invalid conditional date {value!r}") from None


def _conditional(value: Any) -> _Conditional | None:
    if value is None:
        return None
    if _is_headers(value):  # RFC 9110 precondition headers; dates there are whole seconds
        return _Conditional(_header_etags(_header(value, "if-match")), _header_etags(_header(value, "if-none-match")),
                            _ms(_header(value, "if-unmodified-since")), _ms(_header(value, "if-modified-since")),
                            seconds_granularity=True)
    options = _options(value, {})
    return _Conditional(_etags(options.get("etagMatches")), _etags(options.get("etagDoesNotMatch")),
                        _ms(options.get("uploadedBefore")), _ms(options.get("uploadedAfter")),
                        bool(options.get("secondsGranularity")))


def _matches(etags: list[tuple[str, bool]], etag: str, strong: bool) -> bool:
    """If-Match compares strongly (a weak etag never matches), If-None-Match weakly."""
    return any(candidate == "*" or (candidate == etag and not (strong and weak)) for candidate, weak in etags)


def holds(conditions: Any, found: R2Object | None) -> bool:
    """Do `conditions` (an R2Conditional or request headers) hold for `found` (None: no object)?
    For an HTTP answer that must tell a failed precondition (412) from a cache's (304)."""
    return passes(_conditional(conditions), None if found is None else found._record)


def passes(condition: _Conditional | None, record: Record | None) -> bool:
    """R2's rule (HTTP's): a matching etag overrules `uploadedBefore`, a non-matching one
    overrules `uploadedAfter`; with no object only the etag-free conditions can hold."""
    if condition is None:
        return True
    if record is None:
        return condition.etag_matches is None and condition.uploaded_after_ms is None
    def whole(ms: int | None) -> int | None:
        return ms - ms % 1000 if ms is not None and condition.seconds_granularity else ms
    uploaded, after, before = whole(record.uploaded_ms), whole(condition.uploaded_after_ms), \
        whole(condition.uploaded_before_ms)
    if_match = condition.etag_matches is None or _matches(condition.etag_matches, record.etag, strong=True)
    if_none_match = (condition.etag_does_not_match is None
                     or not _matches(condition.etag_does_not_match, record.etag, strong=False))
    modified_since = (after is None or after < uploaded  # type: ignore[operator]
                      or (condition.etag_does_not_match is not None and if_none_match))
    unmodified_since = (before is None or uploaded < before  # type: ignore[operator]
                        or (condition.etag_matches is not None and if_match))
    return if_match and if_none_match and modified_since and unmodified_since


# -- ranges -------------------------------------------------------------------------------

def _range(operation: str, value: Any, size: int) -> tuple[int, int] | None:
    """(offset, length) of the bytes asked for, or None for all of them. A Range header R2
    cannot serve (several ranges, another unit, nonsense) gets the whole object, as R2 answers."""
    if value is None:
        return None
    if _is_headers(value):
        spec = (_header(value, "range") or "").strip()
        unit, _, ranges = spec.partition("=")
        first, dash, last = ranges.strip().partition("-")
        if unit.strip() != "bytes" or "," in ranges or not dash or not (first or last) \
                or not _DIGITS.fullmatch(first or "0") or not _DIGITS.fullmatch(last or "0"):
            return None
        if not first:
            suffix = min(int(last), size)
            return (size - suffix, suffix) if suffix > 0 else None
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        return (start, end - start + 1) if start <= end else None
    options = _options(value, {})
    for name in ("offset", "length", "suffix"):
        if name in options and (not isinstance(options[name], int) or options[name] < 0):
            raise R2Error(operation, "The requested range is not satisfiable.", 10039)
    if "suffix" in options:
        if "offset" in options or "length" in options:
            raise TypeError("Suffix is incompatible with offset and length.")
        if options["suffix"] <= 0:
            raise R2Error(operation, "The requested range is not satisfiable.", 10039)
        suffix = min(options["suffix"], size)
        return size - suffix, suffix
    offset = options.get("offset", 0)
    length = options.get("length")
    if offset > size or (length is not None and length <= 0):
        raise R2Error(operation, "The requested range is not satisfiable.", 10039)
    return offset, size - offset if length is None else min(length, size - offset)


# -- values -------------------------------------------------------------------------------

async def _chunks(value: Any) -> AsyncIterator[bytes]:
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


class _Hashing:
    """Hashes the chunks as they pass on their way to the store."""

    def __init__(self, chunks: AsyncIterator[bytes], names: Iterable[str]) -> None:
        self.chunks = chunks
        self.hashes = {name: hashlib.new(name) for name in names}

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.chunks:
            for digest in self.hashes.values():
                digest.update(chunk)
            yield chunk


def _expected_digest(operation: str, name: str, value: Any) -> str:
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
            headers[_HTTP_FIELDS[name]] = (email.utils.format_datetime(value, usegmt=True)
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


# -- the bucket ---------------------------------------------------------------------------

def _now_ms() -> int:
    return int(time.time() * 1000)


class R2Bucket:
    def __init__(self, name: str, store: Store, retire_after_ms: int = RETIRE_AFTER_MS) -> None:
        self.name = name
        self.store = store
        self.retire_after_ms = retire_after_ms

    def __repr__(self) -> str:
        return f"<R2Bucket {self.name}>"

    async def head(self, key: str) -> R2Object | None:
        record = await self.store.head(_check_key("head", key))
        return None if record is None else R2Object(record, (0, record.size))

    async def get(self, key: str, options: Mapping[str, Any] | None = None, **keywords: Any) -> R2Object | None:
        """The object and its bytes (a range of them if asked), None if there is none, or its
        metadata alone (no `body`) when `onlyIf` does not hold."""
        _check_key("get", key)
        opts = _options(options, keywords)
        condition = _conditional(opts.get("onlyIf"))
        for _ in range(3):  # the record read, then its bytes: an overwrite between the two reads again
            record = await self.store.head(key)
            if record is None:
                return None
            if not passes(condition, record):
                return R2Object(record, (0, record.size))
            span = _range("get", opts.get("range"), record.size) or (0, record.size)
            offset, length = span
            chunks = self.store.read_blob(record.blob, offset, length)
            try:
                first = await anext(chunks, None)
            except BlobGone:
                continue
            return R2ObjectBody(record, _prepend(first, chunks), span)
        raise R2Error("get", "We encountered an internal error. Please try again.", 10001)

    async def put(self, key: str, value: Any, options: Mapping[str, Any] | None = None,
                  **keywords: Any) -> R2Object | None:
        """Store `value` under `key`; None (nothing written) when `onlyIf` does not hold."""
        _check_key("put", key)
        opts = _options(options, keywords)
        condition = _conditional(opts.get("onlyIf"))
        http = _http_metadata(opts.get("httpMetadata"))
        custom = _custom_metadata("put", opts.get("customMetadata"))
        expected = {name: _expected_digest("put", name, opts[name]) for name in _HASHES if opts.get(name) is not None}
        if len(expected) > 1:
            raise TypeError("You cannot specify multiple hashing algorithms.")
        if condition is not None and not passes(condition, await self.store.head(key)):
            return None  # refused before a byte is stored; checked again at the swap
        version = secrets.token_hex(16)
        hashing = _Hashing(_chunks(value), {"md5", *expected})
        size = await self.store.write_blob(version, aiter(hashing))
        digests = {name: digest.hexdigest() for name, digest in hashing.hashes.items()}
        for name, want in expected.items():
            if digests[name] != want:
                await self.store.delete_blob(version)
                raise R2Error("put", f"The {name.upper().replace('SHA', 'SHA-')} checksum you specified did not "
                                     "match what we received.", 10037)
        record = Record(key, version, version, size, digests["md5"], _now_ms(), http, custom,
                        {name: digests[name] for name in {"md5", *expected}},
                        str(opts.get("storageClass") or "Standard"))
        if not await self._install(record, condition):
            await self.store.delete_blob(version)
            return None
        return R2Object(record)

    async def _install(self, record: Record, condition: _Conditional | None) -> bool:
        """Swap the key's record for `record` if `condition` holds for the one it replaces."""
        while True:
            current = await self.store.head(record.key)
            if not passes(condition, current):
                return False
            if await self.store.swap(record.key, current.version if current else None, record):
                if current is not None:
                    await self._retire(current.blob)
                return True

    async def _retire(self, blob: str) -> None:
        now = _now_ms()
        await self.store.retire(blob, now + self.retire_after_ms)
        for due in await self.store.sweep(now):
            await self.store.delete_blob(due)

    async def delete(self, keys: str | Iterable[str]) -> None:
        """Delete one key or many (up to 1,000); keys that do not exist are no error."""
        many = [keys] if isinstance(keys, str) else list(keys)
        if len(many) > MAX_DELETE:
            raise R2Error("delete", f"You can only delete up to {MAX_DELETE} keys at once.", 10020)
        for key in many:
            _check_key("delete", key)
        for key in many:
            while (current := await self.store.head(key)) is not None:
                if await self.store.swap(key, current.version, None):
                    await self._retire(current.blob)
                    break

    async def list(self, options: Mapping[str, Any] | None = None, **keywords: Any) -> R2Objects:
        """A page of keys in order: `prefix`, `delimiter` (keys below it folded into
        `delimitedPrefixes`), `startAfter`, `cursor`, `limit` (≤ 1,000: objects and prefixes
        together), `include` (`httpMetadata`, `customMetadata`: left out unless asked)."""
        opts = _options(options, keywords)
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
        _check_key("createMultipartUpload", key)
        opts = _options(options, keywords)
        upload = Upload(secrets.token_urlsafe(24), key, _http_metadata(opts.get("httpMetadata")),
                        _custom_metadata("createMultipartUpload", opts.get("customMetadata")), _now_ms())
        await self.store.create_upload(upload)
        return R2MultipartUpload(self, key, upload.upload_id)

    create_multipart_upload = createMultipartUpload

    def resumeMultipartUpload(self, key: str, upload_id: str) -> R2MultipartUpload:
        return R2MultipartUpload(self, _check_key("resumeMultipartUpload", key), upload_id)

    resume_multipart_upload = resumeMultipartUpload


async def _prepend(first: bytes | None, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The first chunk (read to know the blob was there), then the rest; closing it closes the
    store's reader too (its file or stream), whether or not it was read to the end."""
    try:
        if first is not None:
            yield first
            async for chunk in rest:
                yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


class R2MultipartUpload:
    """Parts uploaded in any order (one at a time or together), then `complete` or `abort`."""

    def __init__(self, bucket: R2Bucket, key: str, upload_id: str) -> None:
        self._bucket = bucket
        self.key = key
        self.uploadId = self.upload_id = upload_id

    async def _upload(self, operation: str) -> Upload:
        upload = await self._bucket.store.get_upload(self.uploadId)
        if upload is None or upload.key != self.key:
            raise R2Error(operation, "The specified multipart upload does not exist.", 10024)
        return upload

    async def uploadPart(self, partNumber: int, value: Any) -> dict[str, Any]:
        """Store one part; `{partNumber, etag}` for `complete`."""
        if not isinstance(partNumber, int) or not 1 <= partNumber <= MAX_PARTS:
            raise TypeError(f"Part number must be between 1 and {MAX_PARTS} (inclusive). Actual value was: {partNumber}")
        await self._upload("uploadPart")
        store = self._bucket.store
        blob = f"{self.uploadId}.{partNumber}.{secrets.token_hex(4)}"
        hashing = _Hashing(_chunks(value), ("md5",))
        size = await store.write_blob(blob, aiter(hashing))
        part = Part(partNumber, blob, size, hashing.hashes["md5"].hexdigest())
        replaced = await store.put_part(self.uploadId, part)
        if await store.get_upload(self.uploadId) is None:  # aborted or completed meanwhile: nothing left behind
            await store.end_upload(self.uploadId)  # (the part's row, written after the end)
            await self._bucket._retire(blob)
            raise R2Error("uploadPart", "The specified multipart upload does not exist.", 10024)
        if replaced is not None:  # (a complete may be joining it: removed later, not now)
            await self._bucket._retire(replaced.blob)
        return {"partNumber": partNumber, "etag": part.etag}

    upload_part = uploadPart

    async def abort(self) -> None:
        """End the upload and drop its parts; one already ended is no error (as R2's)."""
        store = self._bucket.store
        upload = await store.get_upload(self.uploadId)
        if upload is None:
            return
        if upload.key != self.key:
            raise R2Error("abortMultipartUpload", "We encountered an internal error. Please try again.", 10001)
        parts = await store.parts(self.uploadId)
        if await store.end_upload(self.uploadId):
            for part in parts:
                await self._bucket._retire(part.blob)

    async def complete(self, uploadedParts: Iterable[Mapping[str, Any]]) -> R2Object:
        """Join the listed parts, in part-number order, into the object (replacing any there)."""
        upload = await self._upload("completeMultipartUpload")
        store = self._bucket.store
        stored = {part.number: part for part in await store.parts(self.uploadId)}
        listed = [(int(p["partNumber"]), str(p["etag"]).strip('"')) for p in uploadedParts]
        if len({number for number, _ in listed}) != len(listed):
            raise R2Error("completeMultipartUpload", "We encountered an internal error. Please try again.", 10001)
        chosen: list[Part] = []
        for number, etag in listed:
            part = stored.get(number)
            if part is None or part.etag != etag:
                raise R2Error("completeMultipartUpload", "One or more of the specified parts could not be found.",
                              10025)
            chosen.append(part)
        if any(part.size < MIN_PART_BYTES for part in chosen[:-1]):  # in the order given
            raise R2Error("completeMultipartUpload", "Your proposed upload is smaller than the minimum allowed "
                          "object size.", 10011)
        chosen.sort(key=lambda part: part.number)
        if chosen and (any(part.size != chosen[0].size for part in chosen[:-1]) or chosen[-1].size > chosen[0].size
                       or (len(chosen) > 1 and chosen[0].size < MIN_PART_BYTES)):
            raise R2Error("completeMultipartUpload", "There was a problem with the multipart upload: all "
                          "non-trailing parts must have the same size.", 10048)
        # claimed before its parts are read: a second complete, an abort or a late part finds it ended
        if not await store.end_upload(self.uploadId):
            raise R2Error("completeMultipartUpload", "The specified multipart upload does not exist.", 10024)
        version = secrets.token_hex(16)

        async def joined() -> AsyncIterator[bytes]:
            for part in chosen:
                async for chunk in store.read_blob(part.blob, 0, part.size):
                    yield chunk
        try:
            size = await store.write_blob(version, joined())
        except BlobGone:
            raise R2Error("completeMultipartUpload", "We encountered an internal error. Please try again.",
                          10001) from None
        finally:
            for part in stored.values():
                await self._bucket._retire(part.blob)
        etag = hashlib.md5(b"".join(bytes.fromhex(p.etag) for p in chosen)).hexdigest() + f"-{len(chosen)}"
        record = Record(self.key, version, version, size, etag, _now_ms(), upload.http_metadata,
                        upload.custom_metadata, {})
        await self._bucket._install(record, None)
        return R2Object(record)
