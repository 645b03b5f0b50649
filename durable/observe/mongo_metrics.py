"""MongoDB driver metrics for /metrics, from pymongo's own monitoring events (every client the
process makes after `install()`: the shop's pools, the cluster's coordination clients).

Command durations come from the driver (`duration_micros`, the round trip as it measured it);
the pool's figures from its check-out events, whose `duration` is the time spent waiting for a
connection (and opening one when none was idle).
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from pymongo import monitoring

from .metrics import FAST_BUCKETS

# the commands this code sends; anything else (a driver's internal one) is "other": bounded labels
_COMMANDS = frozenset({"find", "insert", "update", "delete", "findAndModify", "aggregate", "count", "distinct",
                       "getMore", "killCursors", "createIndexes", "listIndexes", "listCollections", "drop",
                       "dropDatabase", "commitTransaction", "abortTransaction", "endSessions", "hello", "ping",
                       "isMaster", "bulkWrite", "serverStatus", "create"})

COMMAND_SECONDS = Histogram("mongodb_command_duration_seconds", "Round trip of a MongoDB command as the driver "
                            "measured it", ["command"], buckets=FAST_BUCKETS)
COMMAND_FAILURES = Counter("mongodb_command_failures", "MongoDB commands that failed (server error or network)",
                           ["command"])
POOL_CHECKED_OUT = Gauge("mongodb_pool_checked_out_connections", "Connections lent out of the driver's pools now",
                         multiprocess_mode="livesum")
POOL_WAITING = Gauge("mongodb_pool_waiting", "Operations waiting for a pooled connection now",
                     multiprocess_mode="livesum")
POOL_WAIT_SECONDS = Histogram("mongodb_pool_wait_duration_seconds", "Time an operation waited for a connection",
                              buckets=FAST_BUCKETS)
POOL_CHECKOUT_FAILURES = Counter("mongodb_pool_checkout_failures", "Connection check-outs that failed, by reason "
                                 "(connectionError, timeout, poolClosed)", ["reason"])


def _command(name: str) -> str:
    return name if name in _COMMANDS else "other"


class CommandMetrics(monitoring.CommandListener):
    """Each command's round trip and failures; the driver calls it from its task or thread."""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        COMMAND_SECONDS.labels(_command(event.command_name)).observe(event.duration_micros / 1e6)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        name = _command(event.command_name)
        COMMAND_SECONDS.labels(name).observe(event.duration_micros / 1e6)
        COMMAND_FAILURES.labels(name).inc()


class PoolMetrics(monitoring.ConnectionPoolListener):
    """Connections lent out and operations waiting: what a pool too small for the load shows first."""

    def connection_check_out_started(self, event: monitoring.ConnectionCheckOutStartedEvent) -> None:
        POOL_WAITING.inc()

    def connection_checked_out(self, event: monitoring.ConnectionCheckedOutEvent) -> None:
        POOL_WAITING.dec()
        POOL_CHECKED_OUT.inc()
        if event.duration is not None:
            POOL_WAIT_SECONDS.observe(event.duration)

    def connection_check_out_failed(self, event: monitoring.ConnectionCheckOutFailedEvent) -> None:
        POOL_WAITING.dec()
        POOL_CHECKOUT_FAILURES.labels(str(event.reason)).inc()

    def connection_checked_in(self, event: monitoring.ConnectionCheckedInEvent) -> None:
        POOL_CHECKED_OUT.dec()

    def pool_created(self, event: monitoring.PoolCreatedEvent) -> None: pass
    def pool_ready(self, event: monitoring.PoolReadyEvent) -> None: pass
    def pool_cleared(self, event: monitoring.PoolClearedEvent) -> None: pass
    def pool_closed(self, event: monitoring.PoolClosedEvent) -> None: pass
    def connection_created(self, event: monitoring.ConnectionCreatedEvent) -> None: pass
    def connection_ready(self, event: monitoring.ConnectionReadyEvent) -> None: pass
    def connection_closed(self, event: monitoring.ConnectionClosedEvent) -> None: pass


_installed = False


def install() -> None:
    """Once per process, before its clients are made (pymongo reads the listeners at creation)."""
    global _installed
    if not _installed:
        monitoring.register(CommandMetrics())
        monitoring.register(PoolMetrics())
        _installed = True
