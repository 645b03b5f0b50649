"""Trace events in Cloudflare's tail format, the per-event log capture behind them, and tail filters.

A `TraceCapture` is entered around each request (and each alarm run); while it is current in
the task's context, `print()` and `logging` output from that event's code is appended to its
`logs`, and logged exceptions to `exceptions`. Secrets are redacted from all of it, and
sensitive headers never leave the worker.
"""
from __future__ import annotations

import builtins
import logging
import random
import re
import sys
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from ..rpc.wire import INTERNAL_SIGNATURE_HEADER
from .tracing import TraceContext

SENSITIVE_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "stripe-signature",
    "paypal-transmission-sig", "x-gateway-signature", INTERNAL_SIGNATURE_HEADER,
})
REDACTED = "REDACTED"

_capture: ContextVar[TraceCapture | None] = ContextVar("durable_trace_capture", default=None)


class Redactor:
    """Replaces known secret values in text; shared by a process's workers."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, *values: str) -> None:
        self._values.update(v for v in values if isinstance(v, str) and len(v) >= 4)

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, "[REDACTED]")
        return text


redactor = Redactor()


def redact_headers(headers: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in headers:
        name = key.lower()
        out[name] = REDACTED if name in SENSITIVE_HEADERS else redactor(value)
    return out


# parameters that carry a credential: a browser's WebSocket token, API keys, a provider callback's
# signature (M-Pesa's `sig`), OAuth codes and tokens
SENSITIVE_PARAMS = frozenset({"access_token", "token", "api_key", "apikey", "key", "sig", "signature", "secret",
                              "client_secret", "password", "code", "id_token", "refresh_token"})
_QUERY_PART = re.compile(r"([^&;]*)([&;]?)")


def redact_query(query: str) -> str:
    """A query string with its credential parameters blanked. Each parameter's name is decoded as a
    server would (`access%5Ftoken`, `+`, any case) and `;` counts as a separator too, so no
    spelling of a name slips through; everything else stays as it was sent."""
    if "=" not in query:
        return query
    out: list[str] = []
    for part, separator in _QUERY_PART.findall(query):
        name, equals, _ = part.partition("=")
        if equals and unquote_plus(name).strip().lower() in SENSITIVE_PARAMS:
            part = f"{name}={REDACTED}"
        out.append(part + separator)
    return "".join(out)


def now_ms() -> int:
    return int(time.time() * 1000)


_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn",
           logging.ERROR: "error", logging.CRITICAL: "error"}


class TraceCapture:
    """Collects one event's logs, exceptions and outcome into one trace event."""

    def __init__(self, script_name: str, event: dict[str, Any], trace: TraceContext | None = None,
                 object_id: str | None = None) -> None:
        self.script_name = script_name
        self.object_id = object_id  # a Durable Object's event: which object (the dashboard follows one)
        self.event_info = event
        self.trace = trace
        self.timestamp = now_ms()
        self.logs: list[dict[str, Any]] = []
        self.exceptions: list[dict[str, Any]] = []
        self.outcome = "ok"
        self._token: Any = None

    def __enter__(self) -> TraceCapture:
        self._token = _capture.set(self)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        _capture.reset(self._token)
        if exc is not None:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)) or exc_type.__name__ == "CancelledError":
                self.outcome = "canceled"
            else:
                self.record_exception(exc)

    def log(self, level: str, *parts: Any) -> None:
        self.logs.append({"message": [redactor(str(p)) for p in parts], "level": level, "timestamp": now_ms()})

    def record_exception(self, exc: BaseException) -> None:
        self.outcome = "exception"
        self.exceptions.append({"name": type(exc).__name__, "message": redactor(str(exc)), "timestamp": now_ms()})

    def event(self) -> dict[str, Any]:
        trace = {} if self.trace is None else {"requestId": self.trace.request_id,
                                                "traceparent": self.trace.traceparent}
        if self.object_id is not None:
            trace["durableObjectId"] = self.object_id
        return {
            **trace,
            "scriptName": self.script_name,
            "outcome": self.outcome,
            "eventTimestamp": self.timestamp,
            "event": self.event_info,
            "logs": self.logs,
            "exceptions": self.exceptions,
            "diagnosticsChannelEvents": [],
        }


def current_capture() -> TraceCapture | None:
    return _capture.get()


class _CaptureHandler(logging.Handler):
    """Copies log records made during an event into that event's trace."""

    def emit(self, record: logging.LogRecord) -> None:
        capture = _capture.get()
        if capture is None:
            return
        try:
            capture.log(_LEVELS.get(record.levelno, "log"), record.getMessage())
            if record.exc_info and record.exc_info[1] is not None:
                capture.record_exception(record.exc_info[1])
        except Exception:  # never let tracing break the request
            pass


_original_print = builtins.print


def _print(*args: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None, flush: bool = False) -> None:
    """print(): to its stream as always (secrets redacted), and into the current event's logs."""
    if file is None or file is sys.stdout or file is sys.stderr:
        text = (" " if sep is None else sep).join(str(a) for a in args)
        capture = _capture.get()
        if capture is not None:
            capture.log("error" if file is sys.stderr else "log", text)
        _original_print(redactor(text), end=end, file=file, flush=flush)
    else:
        _original_print(*args, sep=sep, end=end, file=file, flush=flush)


_installed = False


def install_capture() -> None:
    """Route print() and logging into the current event's trace (idempotent; once per process)."""
    global _installed
    if _installed:
        return
    _installed = True
    logging.getLogger().addHandler(_CaptureHandler())
    builtins.print = _print


# -- filters ------------------------------------------------------------------------------
ERROR_OUTCOMES = ["exception", "exceededCpu", "exceededMemory", "unknown"]


@dataclass
class TailFilters:
    """The filters of Cloudflare's tail API (`{"filters": [{"outcome": [...]}, ...]}`)."""

    outcome: list[str] | None = None
    method: list[str] | None = None
    header: tuple[str, str | None] | None = None
    client_ip: list[str] | None = None
    query: str | None = None
    sampling_rate: float = 1.0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    @classmethod
    def from_api(cls, body: Any, requester_ip: str | None = None) -> TailFilters:
        """Parse the API body; raise ValueError naming the bad filter."""
        filters = cls()
        items = (body or {}).get("filters", []) if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise ValueError("'filters' must be a list")
        for item in items:
            if not isinstance(item, dict) or len(item) != 1:
                raise ValueError(f"each filter is an object with one key, got {item!r}")
            (name, value), = item.items()
            if name == "sampling_rate":
                if not isinstance(value, (int, float)) or not 0 < value <= 1:
                    raise ValueError("sampling_rate must be in (0, 1]")
                filters.sampling_rate = float(value)
            elif name in ("outcome", "method", "client_ip"):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ValueError(f"{name} must be a list of strings")
                if name == "client_ip":
                    value = [requester_ip if v == "self" and requester_ip else v for v in value]
                if name == "method":
                    value = [v.upper() for v in value]
                setattr(filters, name, value)
            elif name == "header":
                if not isinstance(value, dict) or not isinstance(value.get("key"), str):
                    raise ValueError("header must be {key, query?}")
                filters.header = (value["key"].lower(), value.get("query"))
            elif name == "query":
                if not isinstance(value, str):
                    raise ValueError("query must be a string")
                filters.query = value
            else:
                raise ValueError(f"unknown filter {name!r}")
        return filters

    def matches(self, event: dict[str, Any]) -> bool:
        if self.outcome is not None and event.get("outcome") not in self.outcome:
            return False
        request = (event.get("event") or {}).get("request")
        if self.method is not None and (request is None or request.get("method") not in self.method):
            return False
        headers = (request or {}).get("headers", {})
        if self.header is not None:
            key, query = self.header
            if key not in headers or (query is not None and headers[key] != query):
                return False
        if self.client_ip is not None and headers.get("cf-connecting-ip") not in self.client_ip:
            return False
        if self.query is not None:
            texts = [" ".join(str(m) for m in log.get("message", [])) for log in event.get("logs", [])]
            texts += [event.get("requestId", ""), event.get("traceparent", "")]
            texts += [f"{e.get('name')}: {e.get('message')}" for e in event.get("exceptions", [])]
            if not any(self.query in text for text in texts):
                return False
        return self.sampling_rate >= 1 or self._rng.random() < self.sampling_rate


def cli_filters_to_api(status: list[str] | None = None, method: list[str] | None = None,
                       header: str | None = None, search: str | None = None,
                       sampling_rate: float | None = None, ip: list[str] | None = None) -> dict[str, Any]:
    """wrangler's CLI flags → the API's filter list, as workers-sdk's tail/filters.ts maps them."""
    filters: list[dict[str, Any]] = []
    if sampling_rate is not None:
        filters.append({"sampling_rate": sampling_rate})
    if status:
        outcomes: list[str] = []
        for s in status:
            outcomes += {"ok": ["ok"], "error": ERROR_OUTCOMES, "canceled": ["canceled"]}[s]
        filters.append({"outcome": outcomes})
    if method:
        filters.append({"method": method})
    if header:
        key, sep, query = header.partition(":")
        filters.append({"header": {"key": key.strip(), **({"query": query.strip()} if sep else {})}})
    if ip:
        filters.append({"client_ip": ip})
    if search:
        filters.append({"query": search})
    return {"filters": filters}
