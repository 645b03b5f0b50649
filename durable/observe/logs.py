"""Process logging: every record carries the current request id and traceparent; production
writes one JSON object per line (to stdout, for a log shipper), development readable text."""
from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any, TextIO

from . import tracing
from .tail import redactor

# attributes a LogRecord has anyway; anything else was passed as `extra=` and is a field
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
QUIET = ("uvicorn.error", "uvicorn.access", "quart.app", "quart.serving", "aiohttp.access", "httpx", "httpx2")


class TraceFields(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        context = tracing.current()
        if context is not None and not hasattr(record, "request_id"):
            record.request_id = context.request_id
            record.traceparent = context.traceparent
            record.trace_id, record.span_id = context.trace_id, context.span_id  # as OpenTelemetry logs name them
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _utc_stamp(record.created),
            "level": record.levelname.lower(), "logger": record.name, "message": redactor(record.getMessage())}
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info and record.exc_info[1] is not None:
            line["exception"] = redactor(f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}")
        return json.dumps(line, default=str)


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Lines logged during one turn of the event loop are written and flushed together at its end:
    a busy server logs a line per request, and a write and flush per line cost more than the line."""

    MAX_PENDING = 512

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._scheduled = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.write_line(line)

    def write_line(self, line: str) -> None:
        line += self.terminator
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self.lock:  # type: ignore[union-attr]
            self._pending.append(line)
            if loop is None or len(self._pending) >= self.MAX_PENDING:
                self._write_pending()
            elif not self._scheduled:
                self._scheduled = True
                loop.call_soon(self.flush)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()

    def _write_pending(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        text, self._pending = "".join(self._pending), []
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # a closed or broken stream must not break the request that logged
            pass


def _utc_stamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created * 1000) % 1000:03d}Z"


class AccessLog:
    """The line every request leaves, written straight to the process's log handler: the same
    text or JSON the logging module would write, without a LogRecord, filters and two handlers
    per line (measured: ~45 µs a line, more than the gateway's own work for a request). Before
    `setup_logging` (tests, embedding) it goes through `logging` as any other line."""

    logger = logging.getLogger("durable.access")

    def __init__(self) -> None:
        self.handler: BatchingStreamHandler | None = None
        self.json = False

    def write(self, worker: str, method: str, path: str, status: int | None, duration_ms: float,
              request_id: str, traceparent: str, close_code: int | None = None, scheme: str = "http") -> None:
        """One line per request; a WebSocket's (method `WS`) when it closes, with its close code.
        `scheme` (http, https, ws, wss) says whether the request came over TLS."""
        if not self.logger.isEnabledFor(logging.INFO):
            return
        message = "%s %s %s %s (%.1f ms) request_id=%s" % (worker, method, path, "-" if status is None else status,
                                                         duration_ms, request_id)
        if close_code is not None:
            message += f" close={close_code}"
        if self.handler is not None and not self.json:  # the usual case: a text line, no fields
            self.handler.write_line(f"[{self.logger.name}:INFO] {message}")
            return
        fields = {"worker": worker, "method": method, "path": path, "status": status, "duration_ms": duration_ms,
                  "request_id": request_id, "traceparent": traceparent, "scheme": scheme,
                  **({"close_code": close_code} if close_code is not None else {})}
        if self.handler is None:
            self.logger.info(message, extra=fields)
        else:
            self.handler.write_line(json.dumps({"time": _utc_stamp(time.time()), "level": "info",
                                                "logger": self.logger.name, "message": redactor(message), **fields}))


access_log = AccessLog()


def setup_logging(fmt: str = "text", stream: TextIO | None = None) -> None:
    handler = BatchingStreamHandler(stream or (sys.stdout if fmt == "json" else sys.stderr))
    access_log.handler, access_log.json = handler, fmt == "json"
    handler.addFilter(TraceFields())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter("[%(name)s:%(levelname)s] %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in QUIET:
        logging.getLogger(noisy).setLevel(logging.WARNING)
