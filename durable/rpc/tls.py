"""Mutual TLS for the internal listener between nodes: each end shows a certificate signed by the
cluster's CA. The server side is loaded into the listener (`server.Server`); this is the caller's."""
from __future__ import annotations

import ssl
from dataclasses import dataclass


@dataclass(frozen=True)
class MutualTls:
    """TLS where both ends show a certificate signed by `ca` (the internal listener between nodes)."""

    cert: str
    key: str
    ca: str

    def client_context(self) -> ssl.SSLContext:
        """What a caller presents and trusts: its own certificate, and only peers signed by `ca`."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
        context.load_cert_chain(self.cert, self.key)
        return context
