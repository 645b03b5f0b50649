"""The JavaScript globals Cloudflare's Python Workers import from `js` (Pyodide's bridge),
as far as this runtime provides them: `Response.new(body, init)`, `Request`, `fetch`,
`WebSocketPair.new()` and `Object.values(pair)`."""
from durable.compat.fetch import fetch
from durable.compat.websocket import Object, WebSocketPair, WebSocketRequestResponsePair
from durable.http import Request, Response

__all__ = ["Object", "Request", "Response", "WebSocketPair", "WebSocketRequestResponsePair", "fetch"]
