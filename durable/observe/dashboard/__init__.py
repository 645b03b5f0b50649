"""A page to look at a running runtime: workers, objects, cluster, live tail, crons and alarms.

`wrangler dev` serves it on its operator listener (the banner prints the URL). Read-only: it
shows state and never changes it. Map: ARCHITECTURE.md, "Observability".
"""
from __future__ import annotations

from .routes import PREFIX, Dashboard, add_dashboard

__all__ = ["PREFIX", "Dashboard", "add_dashboard"]
