"""A provider's calls as OpenTelemetry client spans (`stripe create`, `paypal verify`, …), in
the trace of the request that makes them; used only when span export is on."""
from __future__ import annotations

from typing import Any

from durable.observe.otel import child_span

TRACED = ("create", "verify", "refund", "ensure_webhook_endpoint")


class Traced:
    """Wraps a provider: the calls in TRACED run inside a span; everything else passes through."""

    def __init__(self, provider: Any) -> None:
        self._provider = provider
        self.name = provider.name

    def __getattr__(self, attribute: str) -> Any:
        found = getattr(self._provider, attribute)
        if attribute not in TRACED:
            return found

        async def traced(*args: Any, **kwargs: Any) -> Any:
            with child_span(f"{self.name} {attribute}", "client", {"payment.provider": self.name,
                                                                    "rpc.method": attribute}):
                return await found(*args, **kwargs)
        return traced
