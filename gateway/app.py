"""rest-shop-gateway: the edge. Routes to the base and payments workers through service bindings.

It does no user authentication of its own: each service validates tokens itself.
"""
from __future__ import annotations

from typing import Any

from quart import Quart, Response, request

from durable import Request, env
from models.health import Health
from models.web import install_error_handlers

from .routing import PAYMENTS, route

app = Quart(__name__)
install_error_handlers(app)

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer",
               "content-length", "remote-addr"}
_FORWARDING = {"x-forwarded-for", "x-forwarded-proto"}


@app.get("/health")
async def health() -> Any:
    return Health.now(env.SERVICE_NAME, env.ENVIRONMENT).model_dump()


@app.route("/<path:path>", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])
@app.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])
async def forward(path: str) -> Response:
    upstream, upstream_path = route(request.path)
    binding = env.PAYMENT_SERVICE if upstream == PAYMENTS else env.BASE_SERVICE
    query = request.query_string.decode("latin-1")
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP | _FORWARDING]
    chain = [request.headers.get("x-forwarded-for", ""), request.remote_addr or ""]
    headers += [("x-forwarded-for", ", ".join(part for part in chain if part)),
                ("x-forwarded-proto", request.scheme)]
    upstream_request = Request(f"http://{upstream}{upstream_path}" + (f"?{query}" if query else ""),
                               method=request.method, headers=headers, body=await request.get_data())
    reply = await binding.fetch(upstream_request)
    out_headers = [(k, v) for k, v in reply.headers.items() if k.lower() not in _HOP_BY_HOP]
    return Response(reply.body, status=reply.status, headers=out_headers)
