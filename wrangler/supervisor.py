"""One supervisor for every wrangler command that runs child processes: `serve` (one process per
worker, rolled on SIGHUP) and `dev --nodes N` (N cluster nodes). It starts children, watches
them and the signals, and stops them all the same way: a polite signal, the grace period, then
SIGKILL."""
from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum

Process = asyncio.subprocess.Process


class WhenOneDies(Enum):
    STOP_ALL = "stop_all"  # serve: a worker is missing, so the host is not serving; a process manager restarts us
    CARRY_ON = "carry_on"  # dev --nodes: the others go on (what several nodes are for)


@dataclass
class Supervisor:
    grace_s: float  # how long a child may take to stop before it is killed
    stop_signal: signal.Signals = signal.SIGTERM
    on_stopped: Callable[[int], None] = lambda pid: None  # a child's pid, once it is gone
    children: dict[str, Process] = field(default_factory=dict)  # in start order

    async def stop(self, child: Process, *, kill: bool = False) -> None:
        if child.returncode is None:
            child.send_signal(signal.SIGKILL if kill else self.stop_signal)
            try:
                await asyncio.wait_for(child.wait(), self.grace_s)
            except asyncio.TimeoutError:
                child.kill()
                await child.wait()
        self.on_stopped(child.pid)

    async def stop_all(self, *, together: bool = False) -> None:
        """The last started first: an edge's requests in flight need the workers started before it.
        `together` (cluster nodes): all at once, so no node takes over shards from one leaving."""
        children = list(reversed(list(self.children.values())))
        if together:
            await asyncio.gather(*(self.stop(child) for child in children))
            return
        for child in children:
            await self.stop(child)

    async def watch(self, when_one_dies: WhenOneDies, *,
                    reload: Callable[[], Awaitable[None]] | None = None,
                    on_death: Callable[[str, Process], None] = lambda name, child: None) -> list[str]:
        """Until SIGINT or SIGTERM (or, with STOP_ALL, a child's death): run `reload` on SIGHUP.
        The names of the children that died, each told to `on_death` as it happens."""
        loop = asyncio.get_running_loop()
        stop, reloading = asyncio.Event(), asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if reload is not None:
            loop.add_signal_handler(signal.SIGHUP, reloading.set)
        died: list[str] = []
        while not stop.is_set():
            alive = {asyncio.ensure_future(child.wait()): name for name, child in self.children.items()
                     if name not in died}
            if not alive:
                break
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(reloading.wait())]
            done, pending = await asyncio.wait([*waiters, *alive], return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in done & alive.keys():
                died.append(alive[task])
                on_death(alive[task], self.children[alive[task]])
            if died and when_one_dies is WhenOneDies.STOP_ALL:
                break
            if reloading.is_set() and not stop.is_set() and reload is not None:
                reloading.clear()
                await reload()
        return died
