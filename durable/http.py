"""Request and Response values for `fetch` on service bindings and Durable Object stubs.

Small, fetch-API-shaped and transport-neutral: the same objects travel through an in-process
ASGI call, an HTTP hop, or an RPC to an object in another process.
"""
from __future__ import annotations

import json as jsonlib
from typing import Any
from urllib.parse import urlsplit

from multidict import CIMultiDict

from .compat.forms import Blob, FormData, encode_body, parse_form

HeadersInit = "CIMultiDict[str] | dict[str, str] | list[tuple[str, str]] | None"


# connection-scoped headers: never forwarded by a proxy or a binding (RFC 9110 §7.6.1)
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"})

def _headers(init: Any) -> CIMultiDict[str]:
    if init is None:
        return CIMultiDict()
    if isinstance(init, CIMultiDict):
        return CIMultiDict(init)
    if isinstance(init, dict):
        return CIMultiDict((str(k), str(v)) for k, v in init.items())
    return CIMultiDict((str(k), str(v)) for k, v in init)


def _body(body: Any, headers: CIMultiDict[str], text_type: str | None) -> bytes:
    """A body as bytes; a str, FormData or Blob also sets the content type it implies."""
    implied = None
    if isinstance(body, str):
        body, implied = body.encode("utf-8"), text_type
    elif isinstance(body, (FormData, Blob)):
        body, implied = encode_body(body)
    if implied is not None:
        headers.setdefault("content-type", implied)
    return body or b""


def http_scheme(scope: dict[str, Any]) -> str:
    """The HTTP scheme of an ASGI scope (a WebSocket's `ws`/`wss` is its upgrade's http/https)."""
    scheme = scope.get("scheme", "http")
    return {"ws": "http", "wss": "https"}.get(scheme, scheme)


class _Body:
    """Reading a whole body the fetch API's ways (shared by Request and Response)."""

    body: bytes
    headers: CIMultiDict[str]

    async def text(self) -> str:
        return self.body.decode("utf-8")

    async def bytes(self) -> bytes:
        return self.body

    async def form_data(self) -> FormData:
        return parse_form(self.body, self.headers.get("content-type"))

    async def blob(self) -> Blob:
        return Blob([self.body], content_type=self.headers.get("content-type", ""))

    formData = form_data


class Request(_Body):
    """An HTTP request: method, absolute URL, headers, and the whole body as bytes."""

    def __init__(self, url: str, *, method: str = "GET", headers: Any = None,
                 body: bytes | str | FormData | Blob | None = None, json: Any = None) -> None:
        self.url = url
        self.method = method.upper()
        self.headers = _headers(headers)
        if json is not None:
            body = jsonlib.dumps(json)
            self.headers.setdefault("content-type", "application/json")
        self.body = body if type(body) is bytes else _body(body, self.headers, None)

    @property
    def path(self) -> str:
        return urlsplit(self.url).path or "/"

    @property
    def query_string(self) -> str:
        return urlsplit(self.url).query

    async def json(self) -> Any:
        return jsonlib.loads(self.body)

    @classmethod
    def from_scope(cls, scope: dict[str, Any], body: bytes = b"") -> Request:
        """The request an ASGI scope (HTTP, or a WebSocket upgrade) describes, with its URL rebuilt
        from the Host header and the path as the client sent it."""
        headers = CIMultiDict([(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", ())])
        host = headers.get("host", "localhost")
        path = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
        query = scope.get("query_string", b"").decode("latin-1")
        request = cls.__new__(cls)  # the headers are already what __init__ would make of them
        request.url = f"{http_scheme(scope)}://{host}{path}" + (f"?{query}" if query else "")
        request.method, request.headers, request.body = scope.get("method", "GET").upper(), headers, body
        return request

    @property
    def js_object(self) -> Request:
        """Cloudflare's Python handlers pass `request.js_object` on to JavaScript APIs; here the
        request is already what those take."""
        return self

    def to_wire(self) -> dict[str, Any]:
        return {"url": self.url, "method": self.method, "headers": list(self.headers.items()), "body": self.body}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Request:
        return cls(data["url"], method=data["method"], headers=data["headers"], body=data["body"])

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url}>"


class _JsonMember:
    """`Response.json(data)` makes a JSON response (Cloudflare's Python API, the fetch API's
    static `Response.json`); `await response.json()` reads one: one name, as in JavaScript."""

    def __get__(self, instance: Response | None, owner: type[Response]) -> Any:
        if instance is None:
            return owner.json_response
        return instance._read_json


class Response(_Body):
    """An HTTP response with its whole body, as the fetch API has it: a text body defaults to
    `text/plain;charset=UTF-8` (what workerd sends); `json()`/`text()` read it."""

    def __init__(self, body: bytes | str | FormData | Blob | None = None, status: int = 200, headers: Any = None,
                 *, status_text: str = "", web_socket: Any = None) -> None:
        self.status = int(status)
        self.status_text = status_text
        self.web_socket = web_socket  # a 101 answer's client end of a WebSocketPair
        self.headers = _headers(headers)
        self.body = body if type(body) is bytes else _body(body, self.headers, "text/plain;charset=UTF-8")

    @classmethod
    def json_response(cls, data: Any, status: int = 200, headers: Any = None) -> Response:
        response = cls(jsonlib.dumps(data).encode(), status=status, headers=headers)
        response.headers["content-type"] = "application/json"
        return response

    json = _JsonMember()

    @classmethod
    def new(cls, body: bytes | str | None = None, init: dict[str, Any] | None = None) -> Response:
        """JavaScript's `new Response(body, {status, headers})`, as Pyodide spells it (`js.Response.new`)."""
        init = dict(init or {})
        return cls(body, status=init.get("status", 200), headers=init.get("headers"),
                   status_text=init.get("statusText", ""))

    @classmethod
    def redirect(cls, url: str, status: int = 302) -> Response:
        return cls(None, status=status, headers={"location": url})

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    async def _read_json(self) -> Any:
        return jsonlib.loads(self.body)

    def to_wire(self) -> dict[str, Any]:
        return {"status": self.status, "headers": list(self.headers.items()), "body": self.body}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Response:
        return cls(data["body"], status=data["status"], headers=data["headers"])

    def __repr__(self) -> str:
        return f"<Response {self.status}>"


def make_request(input: Request | str, base_url: str, *, method: str | None = None, headers: Any = None,
                 body: bytes | str | None = None, json: Any = None) -> Request:
    """fetch()'s argument rules: a Request, an absolute URL, or a path on `base_url`."""
    if isinstance(input, Request):
        if method is None and headers is None and body is None and json is None:
            return input
        return Request(input.url, method=method or input.method,
                       headers=headers if headers is not None else input.headers,
                       body=body if body is not None else (None if json is not None else input.body), json=json)
    url = input if "://" in input else base_url.rstrip("/") + "/" + input.lstrip("/")
    return Request(url, method=method or "GET", headers=headers, body=body, json=json)
