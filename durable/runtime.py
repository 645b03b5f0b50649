"""A runtime: several workers in one process, their objects, bindings and tail hub.

Start order follows the binding graph (a worker starts after everything it binds to); objects
of a class are hosted by the worker that defines it, and reached from anywhere else through
its stubs.
"""
from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import ids
from .asgi import ASGIApp
from .assets import AssetsBinding
from .bindings import ServiceBinding
from .cluster.node import ClusterNode, ClusterSettings
from .cluster.transport import ClusterTransport
from .config import ConfigError, R2BucketBinding, WorkerConfig
from .cron import run_crons
from .d1 import D1Database
from .d1.engine import D1File, database_file
from .dev.registry import lookup
from .env import Env, UnsupportedBinding, load_secrets, use_env
from .kv import KVNamespace
from .objects import DurableObjectNamespace, LocalTransport, ObjectHost, Transport
from .observe import mongo_metrics, otel
from .observe.metrics import (
    ObjectMeter,
    RequestMeter,
    meter_loop_steps,
    meter_task_steps,
    metrics_enabled,
)
from .observe.tail import install_capture, redactor
from .observe.tail_api import TailHub
from .r2 import R2Bucket
from .r2.files import FileStore
from .r2.gridfs import GridFSStore
from .r2.s3 import S3Store
from .r2.store import Store
from .rpc.client import HttpClient, HttpTransport, RemoteTarget
from .rpc.tls import MutualTls
from .storage import Engine, StorageEngine
from .storage.migrations import apply_migrations, class_dir
from .version import code_version
from .worker import Worker
from .workflows import Workflow, instance_class
from .workflows import class_name as workflow_class_name


def start_order(configs: list[WorkerConfig]) -> list[WorkerConfig]:
    """Dependencies first (base → payments → gateway), derived from the bindings.

    Bindings resolve lazily, so a cycle (A calls B, B uses A's objects) is allowed; it is
    broken at the edge that closes it, keeping the order deterministic.
    """
    by_name = {c.name: c for c in configs}
    if len(by_name) != len(configs):
        raise ConfigError(configs[0].path, "name", "two configs define the same worker name")
    order: list[WorkerConfig] = []
    state: dict[str, str] = {}

    def visit(name: str) -> None:
        if state.get(name):
            return  # done, or in progress (a cycle): either way, not again
        state[name] = "visiting"
        for dep in sorted(by_name[name].dependencies):
            if dep in by_name:
                visit(dep)
        state[name] = "done"
        order.append(by_name[name])

    for config in configs:
        visit(config.name)
    return order


class Runtime:
    """Loads, wires, starts and stops a set of workers sharing one process."""

    def __init__(self, configs: list[WorkerConfig], *, persist_to: str | Path, local_dev: bool = True,
                 internal_key: str | None = None, remote: dict[str, str] | None = None,
                 alarm_backoff_s: float = 2.0, idle_evict_s: float = 120.0, synchronous: str = "FULL",
                 use_registry: bool = True, cluster: ClusterSettings | None = None,
                 remote_internal: dict[str, str] | None = None, internal_tls: MutualTls | None = None,
                 metrics: bool | None = None) -> None:
        self.configs = start_order(configs)
        self.metrics = metrics_enabled() if metrics is None else metrics  # Prometheus counters (/metrics)
        if self.metrics:
            mongo_metrics.install()  # before any client is made: pymongo reads its listeners then
        otel.install()  # with OTEL_EXPORTER_OTLP_ENDPOINT set: MongoDB commands become spans too
        self.persist_to = Path(persist_to)
        self.local_dev = local_dev
        self.internal_key = internal_key or secrets.token_urlsafe(32)
        self.remote = dict(remote or {})
        self.remote_internal = dict(remote_internal or {})  # where their objects are called (internal listeners)
        self.use_registry = use_registry  # dev sessions find each other; production is told (`remote`)
        self.alarm_backoff_s = alarm_backoff_s
        self.idle_evict_s = idle_evict_s
        self.synchronous = synchronous
        self.workers: dict[str, Worker] = {}
        self.hub = TailHub()
        self.http = HttpClient()
        if internal_tls is not None:
            self.http.internal_ssl = internal_tls.client_context()
        self._evictor: asyncio.Task[None] | None = None
        self._crons: list[asyncio.Task[None]] = []
        self._kv: dict[str, KVNamespace] = {}
        self._d1: dict[str, D1File] = {}  # one file (and its thread) per database, shared by its bindings
        self._r2: dict[str, R2Bucket] = {}
        self.cluster = cluster  # its `urls` may be filled in until start()
        self.node: ClusterNode | None = None
        self.version = code_version([c.path.parent for c in self.configs])
        redactor.add(self.internal_key)

    # -- wiring ---------------------------------------------------------------------------
    @property
    def objects_root(self) -> Path:
        return self.persist_to / "v3" / "do"

    def storage_path(self, script: str, class_name: str) -> Path:
        name = "db.sqlite" if self.node is None else f"node-{self.node.node_id}.sqlite"
        return class_dir(self.objects_root, script, class_name) / name

    def _sql_dir(self, config: WorkerConfig, cls: type[Any]) -> Path | str | None:
        """Where a SQLite-backed class keeps each object's database (or why it has none here)."""
        if cls.__name__ not in config.sqlite_classes:
            return None
        if self.node is not None and not cls.node_local:
            return ("SQL storage (ctx.storage.sql) is kept on one host's disk: cluster mode does not "
                    "support it yet; use the key-value API")
        return class_dir(self.objects_root, config.name, cls.__name__) / "sql"

    def _engine(self, script: str, cls: type[Any]) -> Engine:
        """SQLite on one node; in a cluster, MongoDB (so shards can move), except node-local classes."""
        if self.node is not None and not cls.node_local:
            return self.node.storage(script, cls.__name__)
        return StorageEngine(self.storage_path(script, cls.__name__), synchronous=self.synchronous)

    def _audience(self, name: str) -> str:
        """Whom a signed call to worker `name` elsewhere names: its name, or in a cluster the URL it
        serves at (which is what `--remote` says), as a member names itself."""
        return self.remote.get(name, name) if self.node is not None else name

    def remote_target(self, name: str) -> RemoteTarget | None:
        if name in self.remote:
            return RemoteTarget(self.remote[name], self.internal_key, self._audience(name))
        entry = lookup(name) if self.use_registry else None
        return RemoteTarget(entry.url, entry.internal_key, name) if entry is not None else None

    def object_target(self, name: str) -> RemoteTarget | None:
        """Where another process's objects are called: its internal listener when it has one."""
        if name in self.remote_internal:
            return RemoteTarget(self.remote_internal[name], self.internal_key, self._audience(name))
        return self.remote_target(name)

    def resolve_service(self, name: str) -> ASGIApp | RemoteTarget | list[RemoteTarget] | None:
        """In this process if it runs the worker; in a cluster, every live node serving it (the
        binding spreads requests over those on this host, if any: a call that stays on the host
        does not depend on the network, nor on another host being up); else where `--remote` or
        the dev registry says. Another node (or process) is reached at its internal listener when
        it has one, so a forward carrying a user's credentials crosses the network only under
        the same mutual TLS as object calls."""
        worker = self.workers.get(name)
        if worker is not None:
            return worker
        if self.node is not None:
            members = self.node.membership.members.values()
            here = {urlsplit(url).hostname for url in self.node.settings.urls.values()}
            nodes = [RemoteTarget(m.objects_url(name), self.internal_key, m.audience(name),
                                  near=urlsplit(m.urls[name]).hostname in here, internal=name in m.internal)
                     for m in sorted(members, key=lambda m: m.node_id)
                     if m.serves(name)]
            if nodes:
                return nodes
        if name in self.remote_internal:  # (in a cluster: not a member yet, or not seen as one yet)
            return RemoteTarget(self.remote_internal[name], self.internal_key, self._audience(name), internal=True)
        return self.remote_target(name)

    def _transport(self, config: WorkerConfig, script: str, class_name: str) -> Transport:
        host = None
        if script in self.workers:
            host = self.workers[script].hosts.get(class_name)
            if host is None:
                raise ConfigError(config.path, "durable_objects.bindings",
                                  f"worker {script!r} does not define Durable Object class {class_name!r}")
        if self.node is not None and (host is None or host.guard is not None):
            return ClusterTransport(self.node, script, class_name, host, self.http, self.internal_key)
        if host is not None:
            return LocalTransport(host)
        return HttpTransport(script, class_name, lambda: self.object_target(script), self.http)

    async def start(self) -> None:
        install_capture()
        if self.metrics:  # the event loop's steps are timed for the request whose context they run in
            meter_loop_steps()
            meter_task_steps(asyncio.get_running_loop())
        if self.cluster is not None:
            self.cluster.version = self.version
            self.node = ClusterNode(self.cluster)
        loaded: list[tuple[Worker, dict[str, str]]] = []
        for config in self.configs:
            found = load_secrets(config, state_dir=self.persist_to, local_dev=self.local_dev)
            redactor.add(*found.values())
            worker = await self._load_worker(config)
            self.workers[worker.name] = worker
            loaded.append((worker, found))
        for worker, found in loaded:
            self._bind(worker, found)
        if self.node is not None:
            await self.node.start()
        for worker in self.workers.values():
            await worker.startup()
        self._evictor = asyncio.get_running_loop().create_task(self._evict_idle())
        for worker in self.workers.values():
            if worker.config.triggers.crons:
                if not worker.handles_scheduled:
                    raise ConfigError(worker.config.path, "triggers.crons",
                                      f"{worker.config.main} has no scheduled handler for its cron triggers")
                self._crons.append(asyncio.get_running_loop().create_task(
                    run_crons(worker, lambda w=worker.name: self._fires_crons_of(w))))

    async def _load_worker(self, config: WorkerConfig) -> Worker:
        """The worker's module loaded, and a host for each Durable Object class it defines."""
        worker = Worker(config, internal_key=self.internal_key, on_trace=self._publish,
                        tracing_wanted=self.hub.listening)
        if self.metrics:
            worker.meter = RequestMeter(worker.name)
        worker.spans = otel.spans_for(worker.name)
        if self.node is not None:  # calls to this node name where it serves, so none is good on another
            worker.audience = self.node.settings.urls.get(worker.name) or self.node.node_id
        if self.node is None:  # on one host: renames move a class's stored objects, deletes drop them
            apply_migrations(config, self.objects_root)
        for class_name in config.hosted_classes:
            await self._host(worker, class_name, worker.object_class(class_name), config.created_as(class_name))
        for flow in config.workflows:
            if flow.script_name in (None, config.name):  # its instances are objects of this worker
                cls = instance_class(worker.workflow_class(flow.class_name), flow.name)
                await self._host(worker, cls.__name__, cls, cls.__name__)
        return worker

    def _bind(self, worker: Worker, found: dict[str, str]) -> None:
        """The worker's env: its vars, secrets and bindings (objects, services, KV, R2); then its
        objects' hosts start (their stored alarms are scheduled)."""
        config = worker.config
        bindings: dict[str, Any] = {}
        for b in config.durable_objects:
            script = b.script_name or config.name
            owner = next((c for c in self.configs if c.name == script), config)
            bindings[b.name] = DurableObjectNamespace(script, b.class_name, self._transport(config, script, b.class_name),
                                                      created_as=owner.created_as(b.class_name))
        for s in config.services:
            bindings[s.binding] = ServiceBinding(s.service, lambda n=s.service: self.resolve_service(n), self.http,
                                                 caller=config.name, metrics_on=self.metrics)
        bindings.update(self._storage_bindings(config))
        for flow in config.workflows:
            script = flow.script_name or config.name
            name = workflow_class_name(flow.name)
            bindings[flow.binding] = Workflow(flow.name, DurableObjectNamespace(
                script, name, self._transport(config, script, name)))
        for name, kind in config.unsupported_bindings.items():
            bindings[name] = UnsupportedBinding(kind, name)
        if config.assets is not None and config.assets.binding and worker.assets is not None:
            bindings[config.assets.binding] = AssetsBinding(worker.assets)
        worker.env = Env(vars=config.vars, secrets=found, bindings=bindings,
                         state_dir=self.persist_to / "v3" / "files" / config.name,
                         node=self.node.health if self.node is not None else None, audience=worker.audience,
                         version=self.version)
        for host in worker.hosts.values():
            host.env = worker.env
            host.event_context = _context_with(worker.env)
            host.start()

    async def _host(self, worker: Worker, class_name: str, cls: type[Any], created_as: str) -> None:
        """The host of one Durable Object class of `worker`, on this node's storage."""
        config = worker.config
        engine = self._engine(worker.name, cls)
        key = ids.namespace_key(worker.name, created_as)
        remark = functools.partial(engine.remark_ids, functools.partial(ids.remark, key))
        clustered = self.node is not None and not cls.node_local
        if not clustered:
            await remark()
        host = worker.hosts[class_name] = ObjectHost(
            cls, None, engine, script_name=worker.name,
            class_name=class_name, on_trace=self._publish, tracing_wanted=self.hub.listening,
            alarm_backoff_s=self.alarm_backoff_s, sql_dir=self._sql_dir(config, cls))
        if self.metrics:
            host.meter = engine.meter = ObjectMeter(worker.name, class_name)
        host.spans = worker.spans
        if clustered:  # its stored ids are brought up to date as the node joins (the database may be away now)
            self.node.attach(worker.name, host, engine, before_join=remark)  # type: ignore[arg-type,union-attr]

    def _storage_bindings(self, config: WorkerConfig) -> dict[str, Any]:
        """The worker's KV namespaces, R2 buckets and D1 databases. KV and D1 live on this host's
        disk: a cluster refuses them (its nodes would not share them)."""
        for kind, present in (("kv_namespaces", config.kv_namespaces), ("d1_databases", config.d1_databases)):
            if present and self.node is not None:
                raise ConfigError(config.path, kind, f"{kind} are kept on this host's disk; they are not shared "
                                  "between the hosts of a cluster (use R2 or Durable Objects there)")
        bindings: dict[str, Any] = {}
        for kv in config.kv_namespaces:
            bindings[kv.binding] = self._kv_namespace(kv.id or kv.preview_id or f"{config.name}:{kv.binding}")
        for r2 in config.r2_buckets:
            bindings[r2.binding] = self._r2_bucket(r2)
        for d1 in config.d1_databases:
            if d1.key not in self._d1:
                self._d1[d1.key] = D1File(database_file(self.persist_to, d1.key))
            bindings[d1.binding] = D1Database(self._d1[d1.key], d1.database_name)
        return bindings

    def _kv_namespace(self, namespace_id: str) -> KVNamespace:
        """One store per namespace id: two workers binding the same id share it, as on Cloudflare."""
        if namespace_id not in self._kv:
            self._kv[namespace_id] = KVNamespace.for_namespace(self.persist_to, namespace_id)
        return self._kv[namespace_id]

    def _r2_bucket(self, binding: R2BucketBinding) -> R2Bucket:
        """One bucket per name, shared by the workers that bind it: in the S3-compatible store its
        config names, else on this host's disk, or in a cluster in the coordination database's
        GridFS (every node reads what any node wrote)."""
        name = binding.bucket_name
        if name not in self._r2:
            store: Store
            if binding.s3_bucket or binding.s3_endpoint_url:
                store = S3Store(binding.s3_bucket or name, endpoint_url=binding.s3_endpoint_url,
                                region=binding.s3_region, prefix=binding.s3_prefix)
            elif self.node is not None:
                store = GridFSStore(self.node.db, name)
            else:
                store = FileStore(self.persist_to / "v3" / "r2" / name)
            self._r2[name] = R2Bucket(name, store)
        return self._r2[name]

    def _fires_crons_of(self, script: str) -> bool:
        """One node of a cluster runs a worker's crons: the one its cron key is placed on."""
        if self.node is None:
            return True
        return self.node.winner(script, f"{script}.cron", 0) == self.node.node_id

    def _publish(self, event: dict[str, Any]) -> None:
        """A trace event to the tail hub, with the code version that produced it (as Cloudflare's
        `scriptVersion`); in a cluster it says which node produced it, too."""
        event["scriptVersion"] = {"id": self.version}
        if self.node is not None:
            event["nodeId"] = self.node.node_id
        self.hub.publish(event)

    async def _evict_idle(self) -> None:
        while True:
            await asyncio.sleep(max(self.idle_evict_s / 4, 1.0))
            for worker in self.workers.values():
                for host in worker.hosts.values():
                    host.evict_idle(self.idle_evict_s)

    async def depart(self) -> None:
        """Before the servers stop: a cluster node hands its shards off while it still answers
        (a 421 re-routes a caller; a closed socket would cut its call). Nothing on one node."""
        if self.node is not None:
            await self.node.depart()

    async def close(self) -> None:
        """Stop apps (reverse order), flush every object's storage, close clients."""
        if self._evictor is not None:
            self._evictor.cancel()
        for task in self._crons:
            task.cancel()
        for worker in reversed(list(self.workers.values())):
            try:
                await worker.shutdown()
            finally:
                for host in worker.hosts.values():
                    await host.close()
        if self.node is not None:
            await self.node.stop()  # after every commit landed: hand the shards off at once
        for namespace in self._kv.values():
            namespace.close()
        for database in self._d1.values():
            await asyncio.to_thread(database.close)
        for bucket in self._r2.values():
            await bucket.store.close()
        await self.http.close()
        await otel.shutdown()  # the spans still batched go out, within a few seconds at most


FULL_COLLECTION_EVERY = 100  # collections of the middle generation (Python's default: 10)
YOUNG_COLLECTION_AFTER = 5000  # net new container objects (Python's default: 700)


def _context_with(worker_env: Env) -> contextvars.Context:
    """A context holding only the worker's env: what its objects' alarms run in."""
    def made() -> contextvars.Context:
        use_env(worker_env)
        return contextvars.copy_context()
    return contextvars.Context().run(made)


def settle_heap() -> None:
    """Once a serving process has started: what exists now (modules, apps, clients, configs)
    lives as long as the process, so the collector stops scanning it (`gc.freeze`). Requests
    allocate freely; without this each full collection walks every object loaded at start-up,
    which cost about 15% of a simple request's CPU (measured in process, base and gateway)."""
    gc.collect()
    gc.freeze()
    # Under load, request objects that live for a few hundred ms reach the oldest generation and
    # trigger a full collection every ~3 s, each walking every live object (thousands of Durable
    # Object instances): measured in the 120 s mixed load, their cost per 10 s grew with the live
    # heap to 9% of the CPU. A full collection every 10× as many young ones costs <1%; garbage
    # cycles wait longer to be freed (the rest is freed at once, by reference counting).
    # The youngest generation is collected after 700 new objects by default: 32 requests in flight
    # cross that every few requests, and each collection walks everything they hold (measured,
    # gateway and base on sockets: 15-33 µs of GC per request, ~0.1 collections per request).
    # After 5,000, a collection comes every few hundred requests: 3-5 µs per request.
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_AFTER, middle, FULL_COLLECTION_EVERY)
