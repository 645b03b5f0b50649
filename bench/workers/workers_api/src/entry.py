"""The Python twin of bench/workers/workerd_js, on Cloudflare's Python Workers API: the same JSON
hello and one-object counter, compared like for like with workerd (bench/server_bench.py)."""
import re
from urllib.parse import urlparse

from workers import DurableObject, Response, WorkerEntrypoint

INCR = re.compile(r"^/incr/([^/]+)$")


class Counter(DurableObject):
    async def increment(self):
        n = (await self.ctx.storage.get("n") or 0) + 1
        await self.ctx.storage.put("n", n)
        return n


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        path = urlparse(request.url).path
        if path == "/hello":
            return Response.json({"hello": "world"})
        match = INCR.match(path)
        if match and request.method == "POST":
            return Response.json({"n": await self.env.COUNTER.getByName(match[1]).increment()})
        return Response("not found", status=404)
