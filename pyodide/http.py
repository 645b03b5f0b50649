"""`from pyodide.http import pyfetch` — Pyodide's fetch wrapper, over the runtime's fetch."""
from __future__ import annotations

import json as _json
from typing import Any

from durable.compat.fetch import fetch
from durable.http import Response


class FetchResponse:
    """Pyodide's answer to `pyfetch`: `status`, `ok`, `status_text`, `url`, `headers`, and the
    body as `text()`, `string()`, `json()`, `bytes()`, `buffer()`."""

    def __init__(self, url: str, response: Response) -> None:
        self.url = url
        self._response = response
        self.status = response.status
        self.ok = 200 <= response.status < 300
        self.status_text = getattr(response, "status_text", "") or ""
        self.headers = dict(response.headers.items())

    async def bytes(self) -> bytes:
        return bytes(self._response.body or b"")

    buffer = bytes

    async def text(self) -> str:
        return (await self.bytes()).decode()

    string = text

    async def json(self, **kwargs: Any) -> Any:
        return _json.loads(await self.bytes(), **kwargs)

    def raise_for_status(self) -> None:
        if not self.ok:
            raise OSError(f"{self.status} {self.status_text} for {self.url}")


async def pyfetch(url: str, **kwargs: Any) -> FetchResponse:
    """`await pyfetch(url, method=..., headers=..., body=...)`."""
    return FetchResponse(url, await fetch(url, **kwargs))
