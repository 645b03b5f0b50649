"""`durable.observe.otel.Spans`: a span takes the runtime's own ids (the hop's span id, the
caller's as parent, the trace's), and the sampler the standard variables name decides."""
from __future__ import annotations

from typing import Any

import pytest

from durable.observe.otel import Spans
from durable.observe.tracing import TraceContext

HOP = TraceContext("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "01", "req-1", "a3ce929d0e0e4736")


@pytest.fixture
def otlp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # nothing is sent: no span ends


def ids(span: Any) -> tuple[str, str, str]:
    context = span.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}", f"{span.parent.span_id:016x}"


def test_a_span_has_the_hop_s_ids_and_its_caller_as_parent(otlp: None) -> None:
    spans = Spans("rest-shop-api")
    try:
        span = spans.start("GET /products", HOP, "server")
        assert span.is_recording() and ids(span) == (HOP.trace_id, HOP.span_id, HOP.parent_id)
        first = spans.start("GET /", TraceContext(HOP.trace_id, "1111111111111111", "01", "req-2"), "server")
        assert first.is_recording() and first.parent is None  # the first hop of a trace is a root
    finally:
        spans.provider.shutdown()


def test_the_caller_s_decision_not_to_sample_is_followed(otlp: None) -> None:
    spans = Spans("rest-shop-api")
    try:
        assert not spans.start("GET /", HOP.sampled_as(False), "server").is_recording()
    finally:
        spans.provider.shutdown()


def test_otel_traces_sampler_sets_the_sampler(otlp: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    spans = Spans("rest-shop-api")
    try:
        span = spans.start("GET /", HOP, "server")
        assert not span.is_recording() and not span.get_span_context().trace_flags.sampled
    finally:
        spans.provider.shutdown()
