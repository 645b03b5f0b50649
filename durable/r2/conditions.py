"""R2's conditional requests (`onlyIf`, as an object or Headers) and ranges, with the
precedence and clamping workerd and miniflare apply."""
from __future__ import annotations

import datetime as dt
import email.utils
from dataclasses import dataclass
from typing import Any

from .arguments import DIGITS, R2Error, header_value, is_headers, parse_options
from .store import Record
from .values import R2Object

# -- conditions ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Conditional:
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


def parse_conditional(value: Any) -> Conditional | None:
    if value is None:
        return None
    if is_headers(value):  # RFC 9110 precondition headers; dates there are whole seconds
        return Conditional(_header_etags(header_value(value, "if-match")), _header_etags(header_value(value, "if-none-match")),
                            _ms(header_value(value, "if-unmodified-since")), _ms(header_value(value, "if-modified-since")),
                            seconds_granularity=True)
    options = parse_options(value, {})
    return Conditional(_etags(options.get("etagMatches")), _etags(options.get("etagDoesNotMatch")),
                        _ms(options.get("uploadedBefore")), _ms(options.get("uploadedAfter")),
                        bool(options.get("secondsGranularity")))


def _matches(etags: list[tuple[str, bool]], etag: str, strong: bool) -> bool:
    """If-Match compares strongly (a weak etag never matches), If-None-Match weakly."""
    return any(candidate == "*" or (candidate == etag and not (strong and weak)) for candidate, weak in etags)


def holds(conditions: Any, found: R2Object | None) -> bool:
    """Do `conditions` (an R2Conditional or request headers) hold for `found` (None: no object)?
    For an HTTP answer that must tell a failed precondition (412) from a cache's (304)."""
    return passes(parse_conditional(conditions), None if found is None else found._record)


def passes(condition: Conditional | None, record: Record | None) -> bool:
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

def parse_range(operation: str, value: Any, size: int) -> tuple[int, int] | None:
    """(offset, length) of the bytes asked for, or None for all of them. A Range header R2
    cannot serve (several ranges, another unit, nonsense) gets the whole object, as R2 answers."""
    if value is None:
        return None
    if is_headers(value):
        spec = (header_value(value, "range") or "").strip()
        unit, _, ranges = spec.partition("=")
        first, dash, last = ranges.strip().partition("-")
        if unit.strip() != "bytes" or "," in ranges or not dash or not (first or last) \
                or not DIGITS.fullmatch(first or "0") or not DIGITS.fullmatch(last or "0"):
            return None
        if not first:
            suffix = min(int(last), size)
            return (size - suffix, suffix) if suffix > 0 else None
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        return (start, end - start + 1) if start <= end else None
    options = parse_options(value, {})
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
