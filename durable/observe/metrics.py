"""The runtime's Prometheus metrics: what Cloudflare shows for every Worker and Durable Object
(requests, errors, wall and CPU time, subrequests, invocations, storage), plus the cluster's.

Events are counted where they happen, into prometheus_client metrics on the default registry
(a worker's own metrics, the shop's, land there too); state (live objects, members, shards) is
read when scraped by `RuntimeCollector`. Labels are bounded: worker, class, route template,
method, status class; never a raw path or an id. Under `wrangler serve` the supervisor sets
`PROMETHEUS_MULTIPROC_DIR`, so the old and new process of a reload count into one set of files
and a scrape answered by either sees the same totals (ARCHITECTURE.md, Metrics).

CPU time is summed over each step the event loop runs the request's coroutine (and the tasks it
starts, as Quart does for its handler); waits cost nothing, and a worker called in process
through a service binding counts its own steps, not its caller's.
"""
from __future__ import annotations

import asyncio
import bisect
import collections.abc
import operator
import os
import time
from collections.abc import Iterator
from contextvars import ContextVar
from time import perf_counter, thread_time
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector

from ..coroutines import Driving

if TYPE_CHECKING:
    from ..runtime import Runtime

disable_created_metrics()  # no `_created` series beside every counter: Prometheus does not use them

# wall time of a request or call: 1 ms … 30 s (a request's whole budget)
WALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# CPU time of a request: 50 µs … 1 s (Cloudflare's default limit is 30 s, most requests use < 10 ms)
CPU_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# storage commits and database commands: 100 µs … 5 s
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

UNMATCHED = "(unmatched)"  # no route template (a 404, or an app that names none)

REQUESTS = Counter("workers_requests", "HTTP requests and WebSocket upgrades answered, by route template and "
                   "status class", ["worker", "route", "method", "status"])
REQUEST_SECONDS = Histogram("workers_request_duration_seconds", "Wall time from request to the end of the answer",
                            ["worker", "route", "method"], buckets=WALL_BUCKETS)
REQUEST_CPU = Histogram("workers_request_cpu_seconds", "CPU time the request's own code used: the time its steps "
                        "(and its tasks') held the event loop; waiting costs none", ["worker", "route", "method"],
                        buckets=CPU_BUCKETS)
BINDING_CALLS = Counter("workers_service_binding_calls", "Calls through a service binding, by callee and outcome "
                        "(ok: any answer below 500; error: a 5xx; unreachable: no answer)",
                        ["worker", "service", "outcome"])
BINDING_RETRIES = Counter("workers_service_binding_retries", "Calls sent to the service's next node because one "
                          "refused the connection (they never reached it)", ["worker", "service"])
BINDING_SECONDS = Histogram("workers_service_binding_call_duration_seconds", "Wall time of a service binding call",
                            ["worker", "service"], buckets=WALL_BUCKETS)

DO_INVOCATIONS = Counter("durable_object_invocations", "Events delivered to Durable Objects (rpc, fetch, alarm)",
                         ["worker", "class", "kind"])
DO_ERRORS = Counter("durable_object_errors", "Events that raised (the object was reset)", ["worker", "class"])
DO_GATE_WAIT = Histogram("durable_object_input_gate_wait_seconds", "Time an event waited at its object's input "
                         "gate (behind a blocker or transaction)", ["worker", "class"], buckets=FAST_BUCKETS)
DO_READS = Counter("durable_object_storage_reads", "Storage reads (get and list calls)", ["worker", "class"])
DO_WRITES = Counter("durable_object_storage_writes", "Keys written or deleted, as committed", ["worker", "class"])
DO_WRITTEN_BYTES = Counter("durable_object_storage_written_bytes", "Bytes of values committed", ["worker", "class"])
DO_COMMIT_SECONDS = Histogram("durable_object_storage_commit_duration_seconds", "Wall time of one group commit",
                              ["worker", "class"], buckets=FAST_BUCKETS)
DO_ALARMS = Counter("durable_object_alarms", "Alarm runs by outcome (ok, retried, failed: retries spent)",
                    ["worker", "class", "outcome"])
DO_EVICTIONS = Counter("durable_object_evictions", "Instances evicted after sitting idle", ["worker", "class"])

CLUSTER_LEASES = Counter("cluster_lease_acquisitions", "Shard leases this node took", ["namespace"])
CLUSTER_LEASE_LOSSES = Counter("cluster_lease_losses", "Shards this node lost without handing them off "
                               "(fenced, or its membership lapsed)", ["namespace"])
CLUSTER_HANDOFFS = Counter("cluster_handoffs", "Shards this node handed off (a node joined, or this one left)",
                           ["namespace"])
CLUSTER_FENCED = Counter("cluster_fenced_commits", "Commits refused because another node holds the lease now", [])
CLUSTER_REMOTE_SECONDS = Histogram("cluster_remote_call_duration_seconds", "Wall time of an object call to "
                                   "another node, by outcome", ["class", "outcome"], buckets=WALL_BUCKETS)

# The clock a request's steps are timed with. By default the wall clock: within one step the loop
# thread runs the request's code without waiting, so that is its CPU time up to what the OS takes
# away (a machine busier than its cores) and blocking calls inside the step (which hold the loop
# all the same); 0.07 µs a read. DURABLE_CPU_CLOCK=thread reads the thread CPU clock instead:
# exact, at ~0.5 µs a read (two per step), which this VM's cheapest endpoint pays with 5 % of its
# throughput (make bench, metrics). ARCHITECTURE.md, Metrics.
_clock = thread_time if os.environ.get("DURABLE_CPU_CLOCK", "").lower() == "thread" else perf_counter

# this process's request meter (its steps' CPU time); a worker called in process is its child
_meter: ContextVar[CpuMeter | None] = ContextVar("durable_cpu_meter", default=None)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def status_class(status: int | None) -> str:
    """`2xx`… for a label: a status per series would multiply them for nothing an alert reads."""
    return f"{status // 100}xx" if status else "none"


def method_label(method: str) -> str:
    """A client picks the method: any other than the usual few is one label, not a new series."""
    return method if method in _METHODS else "other"


def note_route_templates(app: Any) -> None:
    """Quart apps: the matched rule's template goes into the ASGI scope as `route`, where the
    runtime's request metrics read it (a raw path would be a series per id). Quart sets the rule
    on its request object as it routes; a request class whose `url_rule` setter also writes the
    scope costs one assignment per request (its getter is C: Quart reads it often)."""
    for attribute in ("request_class", "websocket_class"):
        base = getattr(app, attribute, None)
        if getattr(app, "url_map", None) is not None and base is not None and not getattr(base, "notes_route", False):
            setattr(app, attribute, type(f"RouteNoting{base.__name__}", (base,),
                                         {"notes_route": True, "_url_rule": None, "url_rule": _ROUTE_NOTING_RULE}))


def _note_rule(connection: Any, rule: Any) -> None:
    connection._url_rule = rule
    if rule is not None:
        connection.scope["route"] = rule.rule


_ROUTE_NOTING_RULE = property(operator.attrgetter("_url_rule"), _note_rule)


class CpuMeter:
    """The CPU time of one request (or one Durable Object event): the segments of event-loop
    steps run while it is the current meter of their context. Exclusive: a worker called in
    process, or an object event, opens a meter of its own, and its segments are not its
    caller's."""

    __slots__ = ("cpu_s", "parent", "since")

    def __init__(self, parent: CpuMeter | None = None) -> None:
        self.cpu_s = 0.0
        self.since: float | None = None  # when its open segment began (it is running now)
        self.parent = parent


def _switch(old: CpuMeter | None, new: CpuMeter | None) -> None:
    """Close `old`'s open segment and open one for `new`, at the same instant (within a step)."""
    now = _clock()
    if old is not None and old.since is not None:
        old.cpu_s += now - old.since
        old.since = None
    if new is not None:
        new.since = now


def start_metering() -> tuple[CpuMeter, object]:
    """A meter for the request starting now in this context, its caller's (if any) paused."""
    parent = _meter.get()
    meter = CpuMeter(parent)
    _switch(parent, meter)
    return meter, _meter.set(meter)


def stop_metering(meter: CpuMeter, token: object) -> None:
    """The request is answered: its segment closes and its caller's, if any, resumes."""
    _switch(meter, meter.parent)
    _meter.reset(token)  # type: ignore[arg-type]


def apart(context: Any) -> CpuMeter | None:
    """A Durable Object event about to run in `context` (a copy of its caller's) while a request
    is metered: a meter of its own, so none of its CPU is the request's (on Cloudflare an object's
    CPU time is its own). Call `enter`/`leave` around its first step, which runs inside the
    caller's step; its later steps run in its own task, in its own context."""
    caller = context.get(_meter)
    if caller is None:
        return None
    meter = CpuMeter(caller)
    context.run(_meter.set, meter)
    return meter


def enter(meter: CpuMeter) -> None:
    _switch(meter.parent, meter)


def leave(meter: CpuMeter) -> None:
    _switch(meter, meter.parent)


_unmetered_run = asyncio.events.Handle._run


def _metered_run(self: asyncio.Handle) -> None:
    """`Handle._run` with the step timed for the meter current in its context (a task's step, a
    callback): what the request's coroutine, and every task it started, ran."""
    context = self._context  # type: ignore[attr-defined]
    meter = context.get(_meter)
    if meter is not None:
        meter.since = _clock()
    _unmetered_run(self)
    meter = context.get(_meter)  # it may have changed within the step (a request began or ended)
    if meter is not None and meter.since is not None:
        meter.cpu_s += _clock() - meter.since
        meter.since = None


def meter_loop_steps() -> None:
    """Time the steps of metered contexts, process-wide (the event loop's handles); once.
    Handles whose context has no meter pay one context lookup."""
    asyncio.events.Handle._run = _metered_run  # type: ignore[method-assign]


# uvloop's handles are compiled: patching asyncio's times none of its steps (a request's meter
# then ran from its start to its end, waiting included). On such a loop the steps are timed by the
# coroutines themselves: the request's (`timed`) and those of the tasks made in a metered context.
_steps_timed_by_coroutines = False


def meter_task_steps(loop: asyncio.AbstractEventLoop) -> None:
    """On a loop whose handles are not asyncio's, time metered work through its tasks' coroutines
    (a task factory); on asyncio's, `meter_loop_steps` already does."""
    global _steps_timed_by_coroutines
    made = loop.get_task_factory()
    if isinstance(loop, asyncio.BaseEventLoop) or getattr(made, "times_steps", False):
        return  # (a second runtime on this loop: one factory already times its tasks)
    _steps_timed_by_coroutines = True

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **options: Any) -> asyncio.Future[Any]:
        context = options.get("context")
        if (context.get(_meter) if context is not None else _meter.get()) is not None:
            coro = TimedSteps(coro)
        return made(loop, coro, **options) if made is not None else asyncio.Task(coro, loop=loop, **options)
    factory.times_steps = True  # type: ignore[attr-defined]
    loop.set_task_factory(factory)  # type: ignore[arg-type]


def timed(coro: Any, meter: CpuMeter) -> Any:
    """The request's coroutine, timed step by step where the loop does not time steps (and no
    caller's timed coroutine already drives it)."""
    return TimedSteps(coro) if _steps_timed_by_coroutines and meter.parent is None else coro


class TimedSteps(Driving):
    """`coro`, each of its steps timed for the meter current in its context when the step ends
    (a request may begin or end within a step, as in `_metered_run`)."""

    __slots__ = ()

    def send(self, value: Any) -> Any:
        return self._step(self.coro.send, value)

    def throw(self, *exc: Any) -> Any:
        return self._step(self.coro.throw, *exc)

    def _step(self, resume: Any, *args: Any) -> Any:
        meter = _meter.get()
        if meter is not None and meter.since is None:
            meter.since = _clock()
        try:
            return resume(*args)
        finally:
            meter = _meter.get()
            if meter is not None and meter.since is not None:
                meter.cpu_s += _clock() - meter.since
                meter.since = None


class RequestTotals:
    """One worker's requests summed over routes, as plain numbers: what the dashboard samples
    every few seconds (walking the label children for the same sums takes milliseconds)."""
    __slots__ = ("requests", "errors", "cpu_seconds", "cpu_count", "wall")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0  # answered 5xx, or not answered
        self.cpu_seconds = 0.0
        self.cpu_count = 0
        self.wall = [0] * (len(WALL_BUCKETS) + 1)  # per bucket of WALL_BUCKETS, the last one above them all


class RequestMeter:
    """One worker's request metrics, with the label children it used kept at hand (a label
    lookup costs more than the increment). Requests in flight are a plain count, read when
    scraped (`RuntimeCollector`): a gauge's lock twice a request buys nothing a scrape needs."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self.in_flight = 0
        self.totals = RequestTotals()
        # (route, method, status) → its series' bound updates; statuses are few, so are these
        self._series: dict[tuple[str, str, int | None], tuple[Any, Any, Any]] = {}
        self._counts: dict[tuple[str, str, int | None], Any] = {}  # a WebSocket's: a count, no timings

    def observe(self, route: str, method: str, status: int | None, wall_s: float, cpu_s: float | None) -> None:
        """One answered request; `cpu_s` None when its app could not be metered."""
        series = self._series.get((route, method, status))
        if series is None:
            series = self._series[(route, method, status)] = self._resolve(route, method, status)
        wall, cpu, count = series
        wall(wall_s)
        totals = self.totals
        totals.wall[bisect.bisect_left(WALL_BUCKETS, wall_s)] += 1
        if cpu_s is not None:
            cpu_s = cpu_s if cpu_s > 0.0 else 0.0
            cpu(cpu_s)
            totals.cpu_seconds += cpu_s
            totals.cpu_count += 1
        count()
        totals.requests += 1
        if not status or status >= 500:
            totals.errors += 1

    def count(self, route: str, method: str, status: int | None) -> None:
        """Count one answered request (alone, without timings: a WebSocket, whose duration is its lifetime)."""
        count = self._counts.get((route, method, status))
        if count is None:
            count = self._counts[(route, method, status)] = self._counter(route, method, status)
        count()
        self.totals.requests += 1
        if not status or status >= 500:
            self.totals.errors += 1

    def _resolve(self, route: str, method: str, status: int | None) -> tuple[Any, Any, Any]:
        """The bound updates of one (route, method, status): label lookups cost more than the updates."""
        return (REQUEST_SECONDS.labels(self.worker, route, method).observe,
                REQUEST_CPU.labels(self.worker, route, method).observe, self._counter(route, method, status))

    def _counter(self, route: str, method: str, status: int | None) -> Any:
        """The bound increment of one status's count; a route's first 5xx must show in rate(), so
        its 5xx series starts at 0."""
        REQUESTS.labels(self.worker, route, method, "5xx")
        return REQUESTS.labels(self.worker, route, method, status_class(status)).inc


class BindingMeter:
    """One service binding's calls: outcome (ok below 500, error a 5xx, unreachable: no node of
    the service took the connection, failed: it raised) and wall time; a call its caller gave up
    (cancelled) is not counted."""

    def __init__(self, caller: str, service: str) -> None:
        self.outcomes = {outcome: BINDING_CALLS.labels(caller, service, outcome)
                         for outcome in ("ok", "error", "unreachable", "failed")}
        self.seconds = BINDING_SECONDS.labels(caller, service)
        self.retries = BINDING_RETRIES.labels(caller, service)

    def observe(self, outcome: str, started: float) -> None:
        self.seconds.observe(time.perf_counter() - started)
        self.outcomes[outcome].inc()

    def answered(self, status: int | None, started: float, unreachable: bool = False) -> None:
        """A call that returned: its answer's outcome (no answer at all counts as failed)."""
        self.observe("unreachable" if unreachable else "failed" if status is None
                     else "error" if status >= 500 else "ok", started)


class ObjectMeter:
    """One Durable Object class's counters (label children resolved once)."""

    def __init__(self, worker: str, class_name: str) -> None:
        labels = (worker, class_name)
        self.invocations = {kind: DO_INVOCATIONS.labels(*labels, kind) for kind in ("rpc", "fetch", "alarm")}
        self.errors = DO_ERRORS.labels(*labels)
        self.gate_wait = DO_GATE_WAIT.labels(*labels)
        self.reads = DO_READS.labels(*labels)
        self.writes = DO_WRITES.labels(*labels)
        self.written_bytes = DO_WRITTEN_BYTES.labels(*labels)
        self.commit_seconds = DO_COMMIT_SECONDS.labels(*labels)
        self.alarms = {outcome: DO_ALARMS.labels(*labels, outcome) for outcome in ("ok", "retried", "failed")}
        self.evictions = DO_EVICTIONS.labels(*labels)


class RuntimeCollector(Collector):
    """State read at scrape time: live objects and sockets per class, the cluster as this node
    sees it, the database pool. Only what exists now; nothing is kept between scrapes."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def describe(self) -> list[Metric]:
        return []  # values exist only at collection: registering must not call collect()

    def collect(self) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily("workers_requests_in_flight", "Requests being answered now (by the process "
                                      "that answered the scrape)", labels=["worker"])
        for worker in self.runtime.workers.values():
            if worker.meter is not None:
                in_flight.add_metric([worker.name], worker.meter.in_flight)
        yield in_flight
        live = GaugeMetricFamily("durable_object_instances", "Live Durable Object instances", labels=["worker", "class"])
        sockets = GaugeMetricFamily("durable_object_websockets", "WebSockets accepted by Durable Objects and open",
                                    labels=["worker", "class"])
        for worker in self.runtime.workers.values():
            for class_name, host in worker.hosts.items():
                live.add_metric([worker.name, class_name], host.live_count)
                sockets.add_metric([worker.name, class_name], host.socket_count)
        yield live
        yield sockets
        node = self.runtime.node
        if node is None:
            return
        members = GaugeMetricFamily("cluster_members", "Live members this node sees (itself included)")
        members.add_metric([], len(node.membership.members))
        yield members
        valid = GaugeMetricFamily("cluster_member_valid", "1 while this node counts as a live member (its lease "
                                  "is current), else 0")
        valid.add_metric([], 1.0 if node.joined and node.membership.valid else 0.0)
        yield valid
        owned = GaugeMetricFamily("cluster_shards_owned", "Shards this node holds the lease of", labels=["namespace"])
        counts: collections.Counter[str] = collections.Counter(namespace for namespace, _ in node.owned)
        for namespace in node.namespaces:
            owned.add_metric([namespace], counts.get(namespace, 0))
        yield owned
        suspicions = CounterMetricFamily("cluster_suspicions", "Times this node found another unreachable")
        suspicions.add_metric([], node.suspicion.count)
        yield suspicions


def metrics_enabled() -> bool:
    """Off with DURABLE_METRICS=0 (the overhead benchmark's baseline); on otherwise."""
    return os.environ.get("DURABLE_METRICS", "1").lower() not in ("0", "false", "off", "no")


def exposition(extra: list[Collector], accept: str = "") -> tuple[bytes, str]:
    """The text a scrape gets, in the format its Accept header asks for (Prometheus text, or
    OpenMetrics): this process's metrics, or with PROMETHEUS_MULTIPROC_DIR set the sum over every
    process of the worker (old and new across a reload), plus the `extra` state collectors."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(_Everything())
    for collector in extra:
        registry.register(collector)
    encode, content_type = choose_encoder(accept)
    return encode(registry), content_type


class _Everything(Collector):
    """The default registry, seen through another one (so `extra` can be added per scrape)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
