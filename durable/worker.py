"""One worker in this process: its module, env and hosted objects, behind one traced ASGI entry.

Every request gets a trace event (Cloudflare's tail format) with the logs, prints and
exceptions of its handler; the internal prefix (`rpc.wire`) carries Durable Object RPC from other
processes and never reaches the app.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from . import deadline
from .asgi import header_map, send_response, through_binding
from .assets import Assets
from .compat import modules
from .compat.entrypoint import EntrypointApp, ScheduledController
from .compat.websocket import bridge
from .config import ConfigError, WorkerConfig
from .env import Env, use_env
from .http import Request
from .objects import DurableObject, ObjectHost
from .observe import otel, tracing
from .observe.logs import access_log
from .observe.metrics import (
    UNMATCHED,
    RequestMeter,
    method_label,
    note_route_templates,
    start_metering,
    stop_metering,
    timed,
)
from .observe.tail import TraceCapture, redact_headers, redact_query
from .quart_http import serve_in_one_task
from .rpc.server import ObjectCallServer
from .rpc.wire import INTERNAL_PREFIX, error_body

log = logging.getLogger("durable.worker")
_UNTRACED = contextlib.nullcontext()
SCHEDULED_HANDLER_PATH = "/cdn-cgi/handler/scheduled"  # wrangler dev answers it always
SCHEDULED_TEST_PATH = "/__scheduled"  # and this one with `--test-scheduled`
DEADLINE_HEADER_BYTES = deadline.DEADLINE_HEADER.encode()


def import_worker_module(config: WorkerConfig) -> Any:
    """Import the `main` module. A worker folder with `__init__.py` is imported as a package;
    otherwise, as on Cloudflare, the main module's own folder is the import root (`src/entry.py`
    imports its siblings by name). Two workers whose main modules share a name get their own."""
    directory = config.directory
    main = (directory / config.main).resolve()
    if (directory / "__init__.py").is_file():
        relative = main.relative_to(directory.resolve()).with_suffix("")
        root, module = directory.parent, ".".join((directory.name, *relative.parts))
    else:
        root, module = main.parent, main.stem
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    modules.claim()
    try:
        loaded = sys.modules.get(module)
        if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() != main:
            return _import_as(f"{module}__{config.name.replace('-', '_')}", main)
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(config.path, "main", f"cannot import {module!r}: {exc}") from exc


def _import_as(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _request_info(scope: dict[str, Any]) -> dict[str, Any]:
    """The `event.request` of a trace event, sensitive headers redacted."""
    headers = redact_headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", [])])
    client = scope.get("client") or ("", 0)
    headers.setdefault("cf-connecting-ip", client[0] or "")
    host = headers.get("host") or "%s:%s" % tuple(scope.get("server") or ("localhost", 80))
    query = redact_query(scope.get("query_string", b"").decode("latin-1"))
    url = f"{scope.get('scheme', 'http')}://{host}{scope['path']}" + (f"?{query}" if query else "")
    return {"url": url, "method": scope["method"], "headers": headers, "cf": {}}


class Worker:
    """A loaded worker: `await worker(scope, receive, send)` is its traced fetch handler."""

    def __init__(self, config: WorkerConfig, *, internal_key: str,
                 on_trace: Callable[[dict[str, Any]], None],
                 tracing_wanted: Callable[[str], bool] = lambda script: True) -> None:
        self.config = config
        self.name = config.name
        self.module = import_worker_module(config)
        self.entrypoint = EntrypointApp.find(self.module)  # Cloudflare's Python Workers style
        # a Cloudflare-style fetch handler is the entry even when the module also builds an ASGI
        # `app` (FastAPI behind `asgi.fetch`); otherwise the module's `app` is
        fetches = self.entrypoint is not None and self.entrypoint.handles_fetch
        self.app = self.entrypoint if fetches else getattr(self.module, "app", None) or self.entrypoint
        if self.app is None:
            raise ConfigError(config.path, "main", f"{config.main} defines no fetch handler: an ASGI `app`, "
                              f"a `Default(WorkerEntrypoint)` class or an `on_fetch` function")
        self.scheduled_paths: frozenset[str] = frozenset()  # set by `wrangler dev`: GET <path>?cron=… runs one
        self.last_scheduled: dict[str, dict[str, Any]] = {}  # cron → {at (ms), outcome} of its last run here
        self.env: Env | None = None
        self.hosts: dict[str, ObjectHost] = {}
        self.rpc = ObjectCallServer(self.name, internal_key, self.hosts, lambda: self.request_budget_s)
        self._on_trace = on_trace
        self._tracing_wanted = tracing_wanted  # anyone tailing? (else the event is not built)
        self._budget_s: float | None = None
        self.meter: RequestMeter | None = None  # its request metrics (set by the runtime when metrics are on)
        self.spans: otel.Spans | None = None  # its span exporter (set by the runtime when OTLP export is on)
        note_route_templates(self.app)
        serve_in_one_task(self.app)
        self.assets = _assets(config)

    def workflow_class(self, class_name: str) -> type:
        """The `WorkflowEntrypoint` subclass a `workflows` binding names, from the worker's module."""
        cls = getattr(self.module, class_name, None)
        if not isinstance(cls, type) or not callable(getattr(cls, "run", None)):
            raise ConfigError(self.config.path, "workflows", f"class {class_name!r} with a run(event, step) method "
                              f"is not defined in {self.config.main}")
        return cls

    @property
    def audience(self) -> str:
        """Who internal calls must be addressed to: this worker, or in a cluster this node's URL."""
        return self.rpc.audience

    @audience.setter
    def audience(self, value: str) -> None:
        self.rpc.audience = value

    def object_class(self, class_name: str) -> type[DurableObject]:
        cls = getattr(self.module, class_name, None)
        if cls is None:
            raise ConfigError(self.config.path, "durable_objects.bindings",
                              f"class {class_name!r} is not defined in {self.config.main}")
        if not (isinstance(cls, type) and issubclass(cls, DurableObject)):
            raise ConfigError(self.config.path, "durable_objects.bindings",
                              f"{class_name} in {self.config.main} does not subclass durable.DurableObject")
        return cls

    async def startup(self) -> None:
        await self._lifecycle("startup")

    async def shutdown(self) -> None:
        await self._lifecycle("shutdown")

    async def _lifecycle(self, hook: str) -> None:
        """Run the app's start-up/shutdown hooks (Quart's before/after_serving) with env set."""
        token = use_env(self.env)
        try:
            if hasattr(self.app, hook):
                await getattr(self.app, hook)()
        finally:
            token.var.reset(token)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http" and scope["path"].startswith(INTERNAL_PREFIX):
            await self.rpc.http(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] in self.scheduled_paths:
            await self._test_scheduled(scope, send)
        elif scope["type"] == "http":
            if self.assets is None or not await self._served_asset(scope, send):
                await self._traced(scope, receive, send)
        elif scope["path"].startswith(INTERNAL_PREFIX):
            await self.rpc.websocket(scope, receive, send)
        elif self.app is self.entrypoint:  # a Cloudflare-style worker answers the upgrade itself
            await self._traced_websocket(scope, receive, send, self._websocket)
        else:  # websockets pass through, with the env set
            await self._traced_websocket(scope, receive, send, self.app)

    async def _traced_websocket(self, scope: dict[str, Any], receive: Any, send: Any, handler: Any) -> None:
        """A WebSocket is one trace event and one access-log line, written when it closes: its
        answer (101, or the HTTP refusal), who closed it with which code, and how long it lived."""
        trace = tracing.TraceContext.from_scope(scope)
        capture = TraceCapture(self.name, {}, trace) if self._tracing_wanted(self.name) else None
        started = time.perf_counter()
        status: int | None = None
        closed: dict[str, Any] = {}

        async def send_traced(message: dict[str, Any]) -> None:
            nonlocal status
            kind = message["type"]
            if kind == "websocket.accept":
                status = 101
            elif kind == "websocket.http.response.start":
                status = message["status"]
            elif kind == "websocket.close" and not closed:
                status = status or 403  # refused before the upgrade, as servers answer it
                closed.update(code=message.get("code", 1000), by="server")
            await send(message)

        async def receive_traced() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "websocket.disconnect" and not closed:
                closed.update(code=message.get("code", 1005), by="client")
            return message

        trace_token = tracing.use(trace)
        token = use_env(self.env)
        try:
            with capture or _UNTRACED:
                await handler(scope, receive_traced, send_traced)
        except Exception:
            log.exception("%s: WebSocket %s failed", self.name, scope["path"])
            if status is None:
                status = 500
                await send({"type": "websocket.close", "code": 1011})
        finally:
            token.var.reset(token)
            tracing.reset(trace_token)
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            if capture is not None:
                capture.event_info["request"] = _request_info({**scope, "method": "GET"})
                capture.event_info["response"] = {"status": status}
                capture.event_info["webSocket"] = {"closeCode": closed.get("code"), "closedBy": closed.get("by"),
                                                   "durationMs": duration_ms}
                self._on_trace(capture.event())
            if self.meter is not None:
                self.meter.count(scope.get("route") or UNMATCHED, "GET", status)
            access_log.write(self.name, "WS", scope["path"], status, duration_ms, trace.request_id,
                             trace.traceparent, close_code=closed.get("code"), scheme=scope.get("scheme", "ws"))

    async def _websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The upgrade goes to the fetch handler as a request; a 101 answer with the client end of
        a WebSocketPair is joined to this connection, anything else refuses it."""
        request = Request.from_scope(scope)
        request.headers.setdefault("upgrade", "websocket")
        token = use_env(self.env)
        try:
            response = await self.entrypoint.fetch(request)  # type: ignore[union-attr]
        except Exception:
            log.exception("%s: the WebSocket upgrade failed", self.name)
            response = None
        finally:
            token.var.reset(token)
        if response is None or response.status != 101 or response.web_socket is None:
            await send({"type": "websocket.close", "code": 1008})
            return
        await bridge(response.web_socket, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        """The runtime starts and stops apps itself; servers only hear 'done'."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _traced(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        trace = tracing.TraceContext.from_scope(scope)
        # an event is built only for someone to read it: a tail open when the request came in
        capture = TraceCapture(self.name, {}, trace) if self._tracing_wanted(self.name) else None
        status: int | None = None
        started = time.perf_counter()
        request_id = trace.request_id.encode("latin-1")

        async def send_traced(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = _with_request_id(message, request_id)
            await send(message)

        span = active = None
        if self.spans is not None:
            span, trace, active = self._start_span(scope, trace)
        trace_token = tracing.use(trace)
        token = use_env(self.env)
        meter = self.meter
        cpu = metered = None
        if meter is not None:
            meter.in_flight += 1
            cpu, metered = start_metering()  # its steps, and its tasks', are its CPU time from here
        try:
            with capture or _UNTRACED, deadline.within(self._budget_of(scope)):
                handling = self.app(scope, receive, send_traced)
                await (handling if cpu is None else timed(handling, cpu))
        except asyncio.CancelledError:
            # the server stopped before it answered (grace over); a caller here that gave up answers itself
            if status is None and not through_binding(scope):
                status = await _answer_error(send, 503, "service_unavailable",
                                             "The server stopped before this request finished; retry", True)
            raise
        except Exception:
            # a framework logs its handlers' errors itself; what reaches here (a raw ASGI app's) would
            # otherwise be seen only by someone tailing
            log.exception("%s: %s %s failed", self.name, scope["method"], scope["path"])
            if status is None:  # never a stack trace to the client
                status = await _answer_error(send, 500, "internal_error", "Internal Server Error")
        finally:
            token.var.reset(token)
            tracing.reset(trace_token)
            if capture is not None:
                capture.event_info["request"] = _request_info(scope)
                if status is not None:
                    capture.event_info["response"] = {"status": status}
                self._on_trace(capture.event())
            took_s = time.perf_counter() - started
            if cpu is not None:
                stop_metering(cpu, metered)
            if span is not None:
                _finish_span(span, active, scope, status)
            if meter is not None:
                meter.in_flight -= 1
                meter.observe(scope.get("route") or UNMATCHED, method_label(scope["method"]), status, took_s,
                              cpu.cpu_s if cpu is not None else None)
            access_log.write(self.name, scope["method"], scope["path"], status, round(took_s * 1000, 2),
                             trace.request_id, trace.traceparent, scheme=scope.get("scheme", "http"))

    def _start_span(self, scope: dict[str, Any], trace: Any) -> tuple[Any, Any, Any]:
        """The request's span (with the hop's own ids), the trace the hops after it follow, and
        the exporter made active for them."""
        method = method_label(scope["method"])
        span = self.spans.start(method, trace, "server", {  # type: ignore[union-attr]
            "http.request.method": method, "url.path": scope["path"], "cloudflare.script_name": self.name})
        return span, trace.sampled_as(span.get_span_context().trace_flags.sampled), otel.activate(self.spans)

    async def _served_asset(self, scope: dict[str, Any], send: Any) -> bool:
        """A GET or HEAD a static file answers, without running the worker (Cloudflare's order)."""
        assets, path = self.assets, scope["path"]
        assert assets is not None  # (the caller's check)
        if scope["method"] not in ("GET", "HEAD") or assets.worker_first(path):
            return False
        found = assets.match(path)
        if found is None:
            return False
        started = time.perf_counter()
        headers = header_map(scope)
        response = await assets.respond(found, scope["method"], headers, scope.get("query_string", b"").decode("latin-1"))
        await send_response(response, send)
        trace = tracing.TraceContext.from_scope(scope)
        access_log.write(self.name, scope["method"], path, response.status, round((time.perf_counter() - started) * 1000, 2),
                         trace.request_id, trace.traceparent, scheme=scope.get("scheme", "http"))
        return True

    def _budget_of(self, scope: dict[str, Any]) -> float:
        """This request's budget: ours, or less when its caller (a gateway, a binding) will wait less."""
        for name, value in scope["headers"]:
            if name == DEADLINE_HEADER_BYTES:
                return deadline.budget_from({deadline.DEADLINE_HEADER: value.decode("latin-1")}, self.request_budget_s)
        return self.request_budget_s

    @property
    def request_budget_s(self) -> float:
        """How long a request here may take, every call it makes included (var REQUEST_TIMEOUT_S)."""
        if self._budget_s is None:
            if self.env is None:
                return deadline.DEFAULT_BUDGET_S
            self._budget_s = float(self.env.get("REQUEST_TIMEOUT_S", deadline.DEFAULT_BUDGET_S))
        return self._budget_s

    @property
    def handles_scheduled(self) -> bool:
        return self.entrypoint is not None and self.entrypoint.handles_scheduled

    async def scheduled(self, cron: str, scheduled_ms: int | None = None) -> str:
        """One scheduled event (a cron trigger fired, or a test run): a trace event of its own,
        as on Cloudflare. Returns the outcome ("ok" or "exception")."""
        if self.entrypoint is None:
            raise ConfigError(self.config.path, "triggers.crons", f"{self.config.main} has no scheduled handler")
        scheduled_ms = int(time.time() * 1000) if scheduled_ms is None else scheduled_ms
        capture = TraceCapture(self.name, {"cron": cron, "scheduledTime": scheduled_ms},
                               tracing.TraceContext.from_headers([]))
        token = use_env(self.env)
        try:
            with capture:
                await self.entrypoint.scheduled(ScheduledController(cron, scheduled_ms))
        except Exception:
            log.exception("%s: scheduled handler failed (cron %r)", self.name, cron)
        finally:
            token.var.reset(token)
            if self._tracing_wanted(self.name):
                self._on_trace(capture.event())
            self.last_scheduled[cron] = {"at": scheduled_ms, "outcome": capture.outcome}
        return capture.outcome

    async def _test_scheduled(self, scope: dict[str, Any], send: Any) -> None:
        """wrangler dev's `/cdn-cgi/handler/scheduled?cron=*+*+*+*+*` (and `/__scheduled` with
        `--test-scheduled`) runs the handler now; `time=<ms>` sets its scheduledTime."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        when = query.get("time", [""])[0]
        outcome = await self.scheduled(query.get("cron", [""])[0], int(when) if when.isdigit() else None)
        if scope["path"] == SCHEDULED_HANDLER_PATH:  # miniflare answers the outcome itself
            body = outcome.encode()
        else:
            body = b"Ran scheduled event" if outcome == "ok" else b"Scheduled event failed"
        await send({"type": "http.response.start", "status": 200 if outcome == "ok" else 500,
                    "headers": [(b"content-type", b"text/plain;charset=UTF-8")]})
        await send({"type": "http.response.body", "body": body})


async def _answer_error(send: Any, status: int, code: str, message: str, retry: bool = False) -> int:
    """The error envelope, for a request its app left unanswered; a retryable one says when."""
    body = error_body(code, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status,
                "headers": headers + ([(b"retry-after", b"1")] if retry else [])})
    await send({"type": "http.response.body", "body": body})
    return status


def _with_request_id(start: dict[str, Any], request_id: bytes) -> dict[str, Any]:
    """The answer's head with the request's id, unless the app set one itself."""
    headers = start.get("headers") or ()
    headers = headers if isinstance(headers, (list, tuple)) else list(headers)  # any iterable: read once
    for name, _ in headers:
        if name.lower() == b"x-request-id":
            return start
    return {**start, "headers": [*headers, (b"x-request-id", request_id)]}


def _finish_span(span: Any, active: Any, scope: dict[str, Any], status: int | None) -> None:
    """Name the span by its route template, and say how the request ended."""
    route = scope.get("route")
    if route:
        span.update_name(f"{method_label(scope['method'])} {route}")
        span.set_attribute("http.route", route)
    if status is not None:
        span.set_attribute("http.response.status_code", status)
    else:  # cut before it answered (the client went away, the server stopped)
        span.set_attribute("error.type", "cancelled")
    otel.finish(span, status_code=status if status is not None else 599)
    otel.deactivate(active)


def _assets(config: WorkerConfig) -> Assets | None:
    settings = config.assets
    if settings is None:
        return None
    return Assets(config.directory / settings.directory, html_handling=settings.html_handling,
                  not_found_handling=settings.not_found_handling, run_worker_first=settings.run_worker_first)
