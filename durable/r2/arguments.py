"""R2's argument rules: key and metadata limits, option objects given as dicts or keywords,
HTTP metadata from an object or Headers, and the R2Error codes the API raises."""
from __future__ import annotations

import datetime as dt
import email.utils
import re
import time
from collections.abc import Mapping
from typing import Any

MAX_KEY_BYTES = 1024
MAX_CUSTOM_METADATA_BYTES = 8192  # R2's documented limit (keys and values, UTF-8)
MAX_LIST = 1000
MAX_DELETE = 1000
MIN_PART_BYTES = 5 * 1024 * 1024  # every part but the last
MAX_PARTS = 10000
RETIRE_AFTER_MS = 60_000  # replaced bytes outlive their record this long: reads under way finish
DIGITS = re.compile(r"[0-9]+")  # ASCII digits only ("²".isdigit() is true)
HASHES = ("md5", "sha1", "sha256", "sha384", "sha512")
HTTP_FIELDS = {"contentType": "content-type", "contentLanguage": "content-language",
                "contentDisposition": "content-disposition", "contentEncoding": "content-encoding",
                "cacheControl": "cache-control", "cacheExpiry": "expires"}


class R2Error(Exception):
    """What R2 refuses, with its message and error code (as Workers' R2 errors read)."""

    def __init__(self, operation: str, message: str, code: int) -> None:
        self.operation, self.code = operation, code
        super().__init__(f"{operation}: {message} ({code})")


def parse_options(positional: Mapping[str, Any] | None, keywords: dict[str, Any]) -> dict[str, Any]:
    aliases = {"http_metadata": "httpMetadata", "custom_metadata": "customMetadata", "only_if": "onlyIf",
               "start_after": "startAfter", "storage_class": "storageClass"}
    return {aliases.get(k, k): v for k, v in {**dict(positional or {}), **keywords}.items()}


def check_key(operation: str, key: Any) -> str:
    if not isinstance(key, str) or len(key.encode()) > MAX_KEY_BYTES:
        raise R2Error(operation, "The specified object name is not valid.", 10020)
    return key


def header_value(headers: Any, name: str) -> str | None:
    """A header from a Headers-like mapping (any case)."""
    value = headers.get(name)
    if value is None:
        value = headers.get(name.title())
    return None if value is None else str(value)


def is_headers(value: Any) -> bool:
    """Headers (a Request's, or a dict of header names) rather than an option object."""
    if not isinstance(value, Mapping):
        return hasattr(value, "get") and hasattr(value, "items")
    return any("-" in str(k) or str(k).lower() in ("range", "etag", "expires") for k in value)


def http_metadata_of(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if is_headers(value):
        found = {name: header_value(value, header) for name, header in HTTP_FIELDS.items()}
    else:
        unknown = set(value) - set(HTTP_FIELDS)
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


def custom_metadata_of(operation: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    metadata = {str(k): str(v) for k, v in dict(value).items()}
    if sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items()) > MAX_CUSTOM_METADATA_BYTES:
        raise R2Error(operation, "Your metadata headers exceed the maximum allowed metadata size.", 10012)
    return metadata


def clock_ms() -> int:
    return int(time.time() * 1000)
