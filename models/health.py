"""The `/health` body every service answers with."""
from __future__ import annotations

from datetime import datetime, timezone
from importlib import metadata
from typing import Literal

from pydantic import BaseModel


def version() -> str:
    try:
        return metadata.version("rest-shop")
    except metadata.PackageNotFoundError:
        return "0.0.0+local"


class Health(BaseModel):
    status: Literal["ok", "degraded", "down"]
    service: str
    environment: str
    timestamp: str
    version: str

    @classmethod
    def now(cls, service: str, environment: str, status: Literal["ok", "degraded", "down"] = "ok") -> Health:
        stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return cls(status=status, service=service, environment=environment, timestamp=stamp, version=version())
