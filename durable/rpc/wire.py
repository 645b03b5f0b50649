"""The runtime's own wire, in one place: the path prefix of its internal routes and every header
it adds to a call between processes (Durable Object RPC, an object's WebSocket, a service
binding's forward). Nothing else spells them; a gateway drops all of them from what clients
send (`INTERNAL_HEADERS`). As miniflare keeps its reserved paths and headers in one file."""
from __future__ import annotations

import json

INTERNAL_PREFIX = "/cdn-cgi/durable/"  # POST <prefix><Class>/<id>/<method>; Cloudflare keeps /cdn-cgi/ too
INTERNAL_SIGNATURE_HEADER = "x-durable-signature"  # signing.sign() with the runtime's internal key
INTERNAL_REQUEST_HEADER = "x-durable-request"  # a WebSocket fetch's request (there is no body to carry it)
INTERNAL_AUDIENCE_HEADER = "x-durable-audience"  # signed: who it is for (the node's URL for the worker; outside a cluster the worker's name)
OBJECT_NAME_HEADER = "x-durable-object-name"  # signed: the name an id was made from
UNREACHABLE_HEADER = "x-durable-unreachable"  # on a binding's own 503: no node of the service took the connection
DEADLINE_HEADER = "x-durable-deadline-ms"  # the budget the caller had left when the call left it
SIGN_AGAIN_HEADER = "x-durable-sign-again"  # on a 401 for a call signed before its callee started: it ran nothing

INTERNAL_HEADERS = frozenset({INTERNAL_SIGNATURE_HEADER, INTERNAL_REQUEST_HEADER, INTERNAL_AUDIENCE_HEADER,
                              OBJECT_NAME_HEADER, UNREACHABLE_HEADER, DEADLINE_HEADER, SIGN_AGAIN_HEADER})


def error_body(code: str, message: str) -> bytes:
    """The runtime's own error answers, in the shop's envelope: `{message, error: {code, message}}`."""
    return json.dumps({"message": message, "error": {"code": code, "message": message}}).encode()
