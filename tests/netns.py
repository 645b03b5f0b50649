"""Hosts on one machine: Linux network namespaces joined by a bridge, and the faults a real
network has (a host cut off silently, a slow link), for the cluster's fault tests and by hand.

Every lab is its own: a switch namespace holds the bridge, each host a namespace with one veth
(`eth0`) into it, names and the /24 chosen at random, so two labs (two test runs) never meet and
the machine's own network is never touched. A cut is silent, as a real partition is: the hosts on
either side get a static neighbour entry with a MAC nobody has, so their packets go nowhere and
open connections hang rather than fail (no netem or iptables on this kernel).

The test process reaches the lab from a thread that joined the client host's namespace
(`Lab.run`): a namespace is a property of a thread, and of what it forks.
"""
from __future__ import annotations

import asyncio
import ctypes
import os
import random
import secrets
import shutil
import signal
import subprocess
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

CLONE_NEWNET = 0x40000000
NOWHERE_MAC = "02:00:00:de:ad:01"  # a MAC no host has: packets sent to it are dropped by nobody in particular
T = TypeVar("T")


def unavailable() -> str | None:
    """Why this machine cannot build a lab (None when it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = f"rsprobe{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` is not allowed here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str, namespace: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = ["ip", *(["-n", namespace] if namespace else []), *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")
    return done


def _enter(namespace: str) -> None:
    """Move the calling thread into `namespace` (what it forks from now on is there too)."""
    fd = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace}")
    finally:
        os.close(fd)


@dataclass
class Host:
    name: str
    namespace: str
    ip: str
    lab: Lab
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)

    def popen(self, command: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """A process on this host, in a session of its own (so kill() takes its children too)."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.namespace, *command], start_new_session=True, **kwargs)
        self.processes.append(proc)
        return proc

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Every process started here, as a host's power cut (SIGKILL) or shutdown (SIGTERM)."""
        for proc in self.processes:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
        if sig == signal.SIGKILL:
            for proc in self.processes:
                proc.wait()
            self.processes.clear()

    def cut_from(self, *others: Host) -> None:
        """A silent partition between this host and `others`, both ways."""
        for other in others:
            _ip("neigh", "replace", other.ip, "lladdr", NOWHERE_MAC, "dev", "eth0", "nud", "permanent",
                namespace=self.namespace)
            _ip("neigh", "replace", self.ip, "lladdr", NOWHERE_MAC, "dev", "eth0", "nud", "permanent",
                namespace=other.namespace)

    def heal(self, *others: Host) -> None:
        for other in others:
            _ip("neigh", "del", other.ip, "dev", "eth0", namespace=self.namespace, check=False)
            _ip("neigh", "del", self.ip, "dev", "eth0", namespace=other.namespace, check=False)

    def slow(self, rate: str = "512kbit", latency_ms: int = 300) -> None:
        """A thin link: this host's traffic out is shaped (token bucket) and queues behind itself."""
        subprocess.run(["ip", "netns", "exec", self.namespace, "tc", "qdisc", "replace", "dev", "eth0", "root",
                        "tbf", "rate", rate, "burst", "16kbit", "latency", f"{latency_ms}ms"], check=True)

    def fast(self) -> None:
        subprocess.run(["ip", "netns", "exec", self.namespace, "tc", "qdisc", "del", "dev", "eth0", "root"],
                       capture_output=True)


class Lab:
    """A switch and hosts on it: `add(name)` makes one, `close()` removes every trace."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.subnet = f"10.{random.randint(64, 250)}.{random.randint(0, 255)}"
        self.switch = f"rs{self.tag}-sw"
        self.hosts: dict[str, Host] = {}
        _ip("netns", "add", self.switch)
        _ip("link", "add", "br0", "type", "bridge", namespace=self.switch)
        _ip("link", "set", "br0", "up", namespace=self.switch)

    def add(self, name: str, number: int) -> Host:
        """Host `name` at <subnet>.<number>, on the switch."""
        namespace = f"rs{self.tag}-{name}"
        _ip("netns", "add", namespace)
        port = f"p-{name}"[:15]
        _ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", namespace, namespace=self.switch)
        _ip("link", "set", port, "master", "br0", "up", namespace=self.switch)
        _ip("addr", "add", f"{self.subnet}.{number}/24", "dev", "eth0", namespace=namespace)
        _ip("link", "set", "eth0", "up", namespace=namespace)
        _ip("link", "set", "lo", "up", namespace=namespace)
        host = self.hosts[name] = Host(name, namespace, f"{self.subnet}.{number}", self)
        return host

    def run(self, host: Host, work: Callable[[], Awaitable[T]]) -> T:
        """Run `work()` on an event loop of its own, in a thread that lives on `host`."""
        outcome: dict[str, Any] = {}

        def body() -> None:
            try:
                _enter(host.namespace)
                outcome["value"] = asyncio.run(work())  # type: ignore[arg-type]
            except BaseException as exc:  # re-raised in the caller's thread
                outcome["error"] = exc

        thread = threading.Thread(target=body, name=f"on-{host.name}")
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def close(self) -> None:
        for host in self.hosts.values():
            host.kill()
            _ip("netns", "del", host.namespace, check=False)
        _ip("netns", "del", self.switch, check=False)
