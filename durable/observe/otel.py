"""OpenTelemetry export of spans, on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set: the SDK's batch processor and its OTLP/HTTP exporter,
configured by the standard OTEL_* variables (sampler, batch delay, headers, timeouts).

The runtime already carries a W3C trace context on every hop (`tracing.TraceContext`); spans are
made with *its* ids (a span's id is the hop's span id, its parent the caller's), so what a tail
shows, what the logs say and what a collector receives name the same spans. One tracer provider
per worker: its spans carry the worker as `service.name`. Off, nothing here runs: every hook is
a None check.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from .tracing import TraceContext, current, reset, use

log = logging.getLogger("durable.otel")

_next_ids: ContextVar[tuple[int, int] | None] = ContextVar("durable_otel_next_ids", default=None)
_providers: dict[str, Any] = {}


def enabled() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _id_generator() -> Any:
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class HopIds(RandomIdGenerator):
        """The ids of the hop being opened (set around `start_span`), else random ones."""

        def generate_trace_id(self) -> int:
            preset = _next_ids.get()
            return preset[0] if preset is not None else super().generate_trace_id()

        def generate_span_id(self) -> int:
            preset = _next_ids.get()
            return preset[1] if preset is not None else super().generate_span_id()

    return HopIds()


class Spans:
    """One worker's tracer: spans opened with the runtime's own trace context."""

    def __init__(self, service: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import (
            NonRecordingSpan,
            SpanContext,
            SpanKind,
            TraceFlags,
            set_span_in_context,
        )
        self._kinds = SpanKind
        self._remote = lambda trace_id, span_id, flags: set_span_in_context(NonRecordingSpan(SpanContext(
            trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))))
        self.provider = TracerProvider(resource=Resource.create({"service.name": service}),
                                       id_generator=_id_generator())
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # exports on its own thread
        self.tracer = self.provider.get_tracer("durable")

    def start(self, name: str, hop: TraceContext, kind: str = "internal",
              attributes: Mapping[str, Any] | None = None) -> Any:
        """A span whose id is `hop.span_id`, child of `hop.parent_id` (a root when it has none)."""
        from opentelemetry.context import Context
        flags = int(hop.flags, 16)
        context = self._remote(int(hop.trace_id, 16), int(hop.parent_id, 16), flags) if hop.parent_id else Context()
        token = _next_ids.set((int(hop.trace_id, 16), int(hop.span_id, 16)))
        try:
            return self.tracer.start_span(name, context=context, kind=getattr(self._kinds, kind.upper()),
                                          attributes=attributes)
        finally:
            _next_ids.reset(token)

    def shutdown(self) -> None:
        """Export what is left (the batch processor's flush), then stop its thread."""
        self.provider.shutdown()


def spans_for(service: str) -> Spans | None:
    """The worker's tracer, made on first use; None when export is off."""
    if not enabled():
        return None
    spans = _providers.get(service)
    if spans is None:
        spans = _providers[service] = Spans(service)
    return spans


SHUTDOWN_LIMIT_S = 3.0  # a collector that is away must not hold a stopping process (or a reload) longer


async def shutdown(limit_s: float = SHUTDOWN_LIMIT_S) -> None:
    """Export the spans still batched, every worker's at once, for `limit_s` at most: the flush
    runs on daemon threads, so what a dead collector does not take is dropped at exit."""
    providers = list(_providers.values())
    _providers.clear()
    if not providers:
        return
    finished = [threading.Event() for _ in providers]

    def flush(spans: Spans, done: threading.Event) -> None:
        try:
            spans.shutdown()
        except Exception as exc:  # a collector away at exit must not stop the shutdown
            log.warning("could not export the last spans: %s", exc)
        finally:
            done.set()
    for spans, done in zip(providers, finished):
        threading.Thread(target=flush, args=(spans, done), daemon=True, name="otel-flush").start()
    deadline = time.monotonic() + limit_s
    for done in finished:
        if not await asyncio.to_thread(done.wait, max(0.0, deadline - time.monotonic())):
            log.warning("spans not exported within %g s at shutdown (is the collector away?); dropped", limit_s)
            return


# the worker whose code runs now (a request or an object event): whose tracer a MongoDB command
# or a provider call reports to
_active: ContextVar[Spans | None] = ContextVar("durable_otel_active", default=None)


def activate(spans: Spans | None) -> object:
    return _active.set(spans)


def deactivate(token: object) -> None:
    _active.reset(token)  # type: ignore[arg-type]


def active() -> Spans | None:
    return _active.get()


def finish(span: Any, error: BaseException | None = None, status_code: int | None = None) -> None:
    """End `span`: an error or a 5xx marks it failed (as OpenTelemetry's HTTP conventions say)."""
    from opentelemetry.trace import Status, StatusCode
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:200]))
    elif status_code is not None and status_code >= 500:
        span.set_status(Status(StatusCode.ERROR))
    span.end()


def mark_failed(span: Any) -> None:
    from opentelemetry.trace import Status, StatusCode
    span.set_status(Status(StatusCode.ERROR))


@contextmanager
def child_span(name: str, kind: str = "client", attributes: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """A span for work the current hop does (a provider call, a commit wait), made current for
    what runs inside it, so the calls it makes are its children. Nothing when export is off."""
    spans, hop = _active.get(), current()
    if spans is None or hop is None:
        yield None
        return
    child = hop.child()
    span = spans.start(name, child, kind, attributes)
    token = use(child)
    try:
        yield span
    except BaseException as exc:
        reset(token)
        token = None
        finish(span, exc)
        raise
    finally:
        if token is not None:
            reset(token)
            finish(span)


def _command_listener() -> Any:
    from pymongo import monitoring

    class CommandSpans(monitoring.CommandListener):
        """A client span per MongoDB command sent while a request or an object event runs (the
        driver calls `started` in the task that sends it); other threads' commands are skipped."""

        def __init__(self) -> None:
            self._open: dict[tuple[int, Any], Any] = {}

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            spans, hop = _active.get(), current()
            if spans is None or hop is None:
                return
            name = event.command_name
            attributes = {"db.system.name": "mongodb", "db.operation.name": name, "db.namespace": event.database_name}
            collection = event.command.get(name)
            if isinstance(collection, str):
                attributes["db.collection.name"] = collection
            self._open[(event.request_id, event.connection_id)] = spans.start(f"mongodb {name}", hop.child(), "client",
                                                                              attributes)

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            span = self._open.pop((event.request_id, event.connection_id), None)
            if span is not None:
                finish(span)

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            span = self._open.pop((event.request_id, event.connection_id), None)
            if span is not None:
                mark_failed(span)
                span.end()

    return CommandSpans()


_listening = False


def install() -> None:
    """Once per process, before its MongoDB clients are made: their commands become spans."""
    global _listening
    if enabled() and not _listening:
        from pymongo import monitoring
        monitoring.register(_command_listener())
        _listening = True
