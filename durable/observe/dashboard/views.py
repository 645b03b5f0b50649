"""The dashboard's read-only views of this process: workers and their bindings, object classes,
the cluster (from the coordination database, so every node's page shows every node), crons and
alarms. Each is a plain dict, answered as JSON."""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pymongo.errors import PyMongoError

from ...cron import next_due
from .series import Totals

ALARMS_SHOWN = 50


def _iso(epoch_s: float | None) -> str | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, timezone.utc).isoformat().replace("+00:00", "Z")


def bindings(worker: Any) -> list[dict[str, str]]:
    """The worker's edges in the bindings graph: to services, object classes and storage."""
    config = worker.config
    edges = [{"binding": b.binding, "kind": "service", "target": b.service} for b in config.services]
    edges += [{"binding": b.name, "kind": "durable_object", "target": f"{b.script_name or config.name}.{b.class_name}"}
              for b in config.durable_objects]
    edges += [{"binding": b.binding, "kind": "kv", "target": b.id} for b in config.kv_namespaces]
    edges += [{"binding": b.binding, "kind": "r2", "target": b.bucket_name} for b in config.r2_buckets]
    edges += [{"binding": b.binding, "kind": "d1", "target": b.database_name} for b in config.d1_databases]
    edges += [{"binding": b.binding, "kind": "workflow", "target": b.name} for b in config.workflows]
    return edges


def overview(runtime: Any, urls: dict[str, str], totals: dict[str, Totals]) -> dict[str, Any]:
    """Every worker here: its URL, live request totals, bindings and object classes."""
    node = runtime.node
    workers = []
    for name, worker in runtime.workers.items():
        count = totals.get(name)
        workers.append({
            "name": name, "url": urls.get(name), "requests": int(count.requests) if count else 0,
            "errors": int(count.errors) if count else 0,
            "inFlight": worker.meter.in_flight if worker.meter is not None else None,
            "bindings": bindings(worker),
            "classes": [{"class": class_name, "live": host.live_count, "webSockets": host.socket_count,
                         "storage": getattr(host.engine, "kind", type(host.engine).__name__), "sql": isinstance(host.sql_dir, Path),
                         "liveObjects": host.live_list(20)}
                        for class_name, host in worker.hosts.items()]})
    return {"node": node.node_id if node is not None else "dev", "version": runtime.version, "now": _iso(time.time()),
            "metrics": runtime.metrics, "workers": workers}


async def cluster(runtime: Any) -> dict[str, Any]:
    """Members with their last beats, who holds how many shards of each class at which epochs
    (the lease table, so every node's page agrees), and this node's recent shard events."""
    node = runtime.node
    if node is None:
        return {"clustered": False}
    held: dict[str, Counter[str]] = defaultdict(Counter)
    top_epoch: dict[str, int] = defaultdict(int)
    try:
        async for lease in node.db["leases"].find({}, {"owner": 1, "epoch": 1}):
            namespace = str(lease["_id"]).rpartition("/")[0]
            owner = lease.get("owner") or "(released)"
            held[owner][namespace] += 1
            top_epoch[namespace] = max(top_epoch[namespace], int(lease.get("epoch", 0)))
        leases_error = None
    except PyMongoError as exc:
        leases_error = f"the lease table could not be read: {exc}"
    return {"clustered": True, **node.health(), "leasesError": leases_error,
            "owners": {owner: dict(counts) for owner, counts in held.items()}, "placed": placed(node),
            "topEpochs": dict(top_epoch),
            "departed": {node_id: round(age, 1) for node_id, age in node.membership.departed.items()},
            "recent": [{**event, "at": _iso(event["at"])} for event in reversed(node.recent)]}


_placements: dict[int, tuple[Any, dict[str, dict[str, int]]]] = {}  # per node: (members seen, placement)


def placed(node: Any) -> dict[str, dict[str, int]]:
    """Where rendezvous places each class's shards among the live members now: whose they are,
    whether or not a call has taken their lease there yet (leases are taken on first use).
    Worked out again only when the members change (classes × shards hashes each time)."""
    seen = (node.membership.version, tuple(sorted(node.membership.members)))
    cached = _placements.get(id(node))
    if cached is not None and cached[0] == seen:
        return cached[1]
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for name, namespace in node.namespaces.items():
        for shard in range(node.settings.shards):
            counts[node.winner(namespace.script, name, shard) or "(nobody)"][name] += 1
    result = {member: dict(per_class) for member, per_class in counts.items()}
    _placements[id(node)] = (seen, result)
    return result


async def schedules(runtime: Any) -> dict[str, Any]:
    """Each worker's crons (next run, last run here and its outcome) and the alarms set in its
    objects: armed in this process, or stored (one node's SQLite state)."""
    now = time.time()
    crons = []
    for name, worker in runtime.workers.items():
        expressions = list(worker.config.triggers.crons)
        for expression in expressions:
            due, _ = next_due([expression], now)
            last = worker.last_scheduled.get(expression)
            crons.append({"worker": name, "cron": expression, "next": _iso(due),
                          "lastRun": _iso(last["at"] / 1000) if last else None,
                          "lastOutcome": last["outcome"] if last else None})
    alarms = []
    for name, worker in runtime.workers.items():
        for class_name, host in worker.hosts.items():
            for object_id, at_ms in host.alarms_set()[:ALARMS_SHOWN]:
                alarms.append({"worker": name, "class": class_name, "id": object_id, "at": _iso(at_ms / 1000)})
    alarms.sort(key=lambda a: a["at"] or "")
    return {"crons": crons, "alarms": alarms[:ALARMS_SHOWN]}
