"""Addresses for servers a test starts itself."""
from __future__ import annotations

import socket


def free_port() -> int:
    """A port no one listens on now (the server the test starts takes it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
