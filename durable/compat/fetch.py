"""`workers.fetch`: an outbound HTTP request that answers with a (whole-body) Response."""
from __future__ import annotations

from typing import Any

import aiohttp

from ..http import Request, Response, make_request


async def fetch(input: Request | str, **init: Any) -> Response:
    """As the fetch API: a URL or Request, and `method`, `headers`, `body` (or `json`)."""
    request = make_request(input, "http://localhost/", method=init.get("method"), headers=init.get("headers"),
                           body=init.get("body"), json=init.get("json"))
    async with aiohttp.ClientSession() as session:
        async with session.request(request.method, request.url, headers=list(request.headers.items()),
                                   data=request.body or None, allow_redirects=init.get("redirect", "follow") == "follow") as resp:
            body = await resp.read()
            return Response(body, status=resp.status, headers=list(resp.headers.items()))
