"""Quart's HTTP connection in one task (durable/quart_http.py), driven through real Quart apps."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from quart import Quart, jsonify, request

from durable.quart_http import OneTaskHTTPConnection, serve_in_one_task

pytestmark = pytest.mark.asyncio


def make_app() -> tuple[Quart, dict[str, Any]]:
    app = Quart(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 10
    seen: dict[str, Any] = {}

    @app.post("/echo")
    async def echo() -> Any:
        seen["task"] = asyncio.current_task()
        return jsonify({"body": (await request.get_data()).decode()})

    @app.get("/file")
    async def file() -> Any:
        response = await app.make_response(b"0123456789")
        await response.make_conditional(request, accept_ranges=True, complete_length=10)
        return response

    @app.get("/slow")
    async def slow() -> Any:
        await asyncio.sleep(0.05)
        seen["finished"] = True
        return "done"

    serve_in_one_task(app)
    return app, seen


def scope(method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"shop.test"), *(headers or [])], "client": ("127.0.0.1", 1), "server": None}


async def call(app: Quart, s: dict[str, Any], messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages the app sends; `receive` gives `messages`, then, as uvicorn does, waits for
    the answer to end and says the client is gone."""
    sent: list[dict[str, Any]] = []
    pending = list(messages)
    answered = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            answered.set()
    await app(s, receive, send)  # type: ignore[arg-type]
    return sent


def body_of(sent: list[dict[str, Any]]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


async def test_a_whole_body_is_handled_in_the_callers_task_and_answered_in_two_messages() -> None:
    app, seen = make_app()
    assert app.asgi_http_class is OneTaskHTTPConnection
    sent = await call(app, scope("POST", "/echo"), [{"type": "http.request", "body": b"hi", "more_body": False}])
    assert seen["task"] is asyncio.current_task()
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 200 and sent[1]["more_body"] is False
    assert body_of(sent) == b'{"body":"hi"}\n'


async def test_a_streamed_upload_is_read_whole_the_quart_way() -> None:
    app, _ = make_app()
    sent = await call(app, scope("POST", "/echo"), [{"type": "http.request", "body": b"ab", "more_body": True},
                                                   {"type": "http.request", "body": b"cd", "more_body": False}])
    assert sent[0]["status"] == 200 and body_of(sent) == b'{"body":"abcd"}\n'


async def test_a_body_over_the_limit_is_a_413_either_way() -> None:
    app, _ = make_app()
    whole = await call(app, scope("POST", "/echo"), [{"type": "http.request", "body": b"x" * 11}])
    streamed = await call(app, scope("POST", "/echo"), [{"type": "http.request", "body": b"x" * 6, "more_body": True},
                                                        {"type": "http.request", "body": b"x" * 6}])
    assert whole[0]["status"] == streamed[0]["status"] == 413


async def test_a_range_of_an_answer_in_memory_is_sent_as_asked() -> None:
    app, _ = make_app()
    sent = await call(app, scope("GET", "/file", [(b"range", b"bytes=2-4")]), [{"type": "http.request"}])
    assert sent[0]["status"] == 206 and body_of(sent) == b"234"


async def test_a_client_leaving_does_not_cut_the_handler_short() -> None:
    app, seen = make_app()
    sent = await call(app, scope("GET", "/slow"), [{"type": "http.request"}, {"type": "http.disconnect"}])
    assert seen.get("finished") is True and body_of(sent) == b"done"
