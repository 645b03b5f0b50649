"""HMAC-SHA256 request signatures between workers, so a shared key never travels on the wire.

`t=<unix seconds>,n=<nonce>,h=<header;names>,v1=<hex>` over the method, the path with its
query, the timestamp, the nonce, the named headers' values and a SHA-256 of the body (Stripe's
header shape, plus what a proxy must vouch for: the caller's credentials and address). A
signature older than the tolerance is stale; a receiver that remembers nonces for that long
(`NonceCache`) refuses a replay. Its memory is the process's, so it also refuses what was signed
before the process started (a call captured before a restart or reload would otherwise be good
once more), and when it is full it refuses new calls (503) rather than forget live nonces.
"""
from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .observe.tracing import random_id


class SignatureError(Exception):
    """Missing, malformed, stale, forged or replayed; the message says which (never the expected value)."""


class NonceCacheFull(Exception):
    """Every remembered nonce is still live: a call now could not be told from a replay later.
    Refused for now (503 with Retry-After), never by forgetting a live nonce."""


def _mac(key: str, method: str, target: str, timestamp: int, nonce: str, body: bytes,
         headers: list[tuple[str, str]]) -> str:
    digest = hashlib.sha256(body).hexdigest()
    signed = "".join(f"{name}:{value.strip()}\n" for name, value in headers)
    message = f"{method.upper()}\n{target}\n{timestamp}\n{nonce}\n{signed}{digest}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def sign(key: str, method: str, target: str, body: bytes = b"", *,
         headers: Iterable[tuple[str, str]] = (), timestamp: int | None = None, nonce: str | None = None) -> str:
    """The header value for a request to `target` (path plus `?query`, as sent), covering
    `headers` (name, value) too: the receiver reads those names' values from the request."""
    stamp = int(time.time()) if timestamp is None else timestamp
    once = nonce or random_id(24)  # unique within the tolerance window, not secret (the key is)
    covered = sorted((name.lower(), value) for name, value in headers)
    names = ";".join(name for name, _ in covered)
    return f"t={stamp},n={once},h={names},v1={_mac(key, method, target, stamp, once, body, covered)}"


@dataclass(frozen=True)
class Signed:
    timestamp: int
    nonce: str


def _fields(header: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in header.split(","))


def _names(fields: dict[str, str]) -> list[str]:
    return [name for name in fields.get("h", "").split(";") if name]


def covered_headers(header: str | None) -> list[str]:
    """The header names a signature covers (none for a missing or malformed one); read after
    `verify`, they say what its signer vouched for."""
    try:
        return _names(_fields(header)) if header else []
    except ValueError:
        return []


def verify(key: str, header: str | None, method: str, target: str, body: bytes = b"", *,
           header_value: Callable[[str], str | None] = lambda name: None, required: Iterable[str] = (),
           tolerance_s: float = 60.0, now: float | None = None) -> Signed:
    """Check a signature; `header_value(name)` reads a covered header from the request, and every
    name in `required` must be covered (so a proxy cannot leave the caller's credentials out)."""
    if not header:
        raise SignatureError("unsigned request")
    try:
        fields = _fields(header)
        stamp = int(fields["t"])
        nonce, given = fields["n"], fields["v1"]
        names = _names(fields)
    except (ValueError, KeyError):
        raise SignatureError("malformed signature") from None
    if not nonce or len(nonce) > 64:
        raise SignatureError("malformed signature")
    missing = {r.lower() for r in required} - set(names)
    if missing:
        raise SignatureError(f"signature does not cover {', '.join(sorted(missing))}")
    if abs((time.time() if now is None else now) - stamp) > tolerance_s:
        raise SignatureError("stale signature")
    covered = [(name, header_value(name) or "") for name in names]
    if not hmac.compare_digest(given.encode(), _mac(key, method, target, stamp, nonce, body, covered).encode()):
        raise SignatureError("signature does not match")
    return Signed(stamp, nonce)


class SignedBeforeStart(SignatureError):
    """A call signed before this process started (it waited in a reload's queue of connections):
    refused before anything ran, so its caller may sign it again and send it once more."""


class NonceCache:
    """Nonces seen within the tolerance window: a second use of one is a replay. Bounded, so a
    flood cannot grow it without limit: expired nonces are dropped (oldest first), and when the
    live ones fill it, new calls are refused (`NonceCacheFull`) until some expire. A signature
    stamped before this cache was made (the process started; to the second, as stamps are) is
    refused: a nonce it carried may have been seen by the process before, which nothing here knows."""

    def __init__(self, window_s: float, max_entries: int = 200_000, started_at: float | None = None) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self.not_before = int(time.time() if started_at is None else started_at)
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._swept_at = float("-inf")

    def check_and_remember(self, signed: Signed, now: float | None = None) -> None:
        moment = time.time() if now is None else now
        if signed.timestamp < self.not_before:
            raise SignedBeforeStart("signed before this process started")
        while self._seen and next(iter(self._seen.values())) < moment:
            self._seen.popitem(last=False)
        if signed.nonce in self._seen:
            raise SignatureError("replayed signature")
        if len(self._seen) >= self.max_entries and moment - self._swept_at >= 1.0:
            # an expired nonce may sit behind a live one (stamps vary by up to the window): look at all
            self._swept_at = moment
            self._seen = OrderedDict((nonce, until) for nonce, until in self._seen.items() if until >= moment)
        if len(self._seen) >= self.max_entries:
            raise NonceCacheFull(f"{len(self._seen)} signatures are still within their window")
        # remembered until the signature would be stale anyway (entries are in order of insertion,
        # and each lives window_s past its stamp, so the first to expire is near the front)
        self._seen[signed.nonce] = max(moment, signed.timestamp + self.window_s)
