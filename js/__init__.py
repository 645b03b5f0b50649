"""The JavaScript globals Cloudflare's Python Workers import from `js` (Pyodide's bridge),
as far as this runtime provides them: `Response.new(body, init)`, `Request`, `fetch`."""
from durable.compat.fetch import fetch
from durable.http import Request, Response

__all__ = ["Request", "Response", "fetch"]
