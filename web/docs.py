"""What a route answers, said in its /openapi.json operation: decorators that mark handlers for
`web.openapi`, the path converters, and QuartSchema installed without its per-response cost."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from quart import Quart
from quart_schema import QuartSchema, document_response
from werkzeug.routing import BaseConverter

from models.errors import ErrorBody
from models.ids import PATH_OBJECT_ID

from .openapi import TruthfulOpenAPI

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def documents_errors(*statuses: int) -> Callable[[F], F]:
    """List error answers (the envelope of ARCHITECTURE.md, API conventions) of a route in its
    /openapi.json operation."""
    def decorate(handler: F) -> F:
        for status in statuses:
            handler = document_response(ErrorBody, status)(handler)
        return handler
    return decorate


class ObjectIdConverter(BaseConverter):
    """`<oid:user_id>`: only a 24-hex id matches, so `/user/login` is never `DELETE /user/<id>`
    (and an OPTIONS answer's Allow lists only what the path really takes)."""

    regex = PATH_OBJECT_ID


def documents_file(media_type: str, *, ranges: bool = False, revalidated: bool = False) -> Callable[[F], F]:
    """The route answers 200 with a file of `media_type` (and 404 when there is none); with
    `ranges` a Range request's 206, with `revalidated` a matching If-None-Match's 304."""
    def decorate(handler: F) -> F:
        handler._documents_file = media_type  # type: ignore[attr-defined]  # read by web.openapi
        handler._documents_file_answers = (ranges, revalidated)  # type: ignore[attr-defined]
        return documents_errors(404)(handler)
    return decorate


def documents_redirect(target: str) -> Callable[[F], F]:
    """The route answers 302 with a `Location` (to `target`, in words) instead of a body."""
    def decorate(handler: F) -> F:
        handler._documents_redirect = target  # type: ignore[attr-defined]  # read by web.openapi
        return handler
    return decorate


def documents_path_choices(**choices: list[str]) -> Callable[[F], F]:
    """These path parameters take only the values listed (the document says which exist)."""
    def decorate(handler: F) -> F:
        handler._path_choices = choices  # type: ignore[attr-defined]  # read by web.openapi
        return handler
    return decorate


def documents_path_patterns(**patterns: str) -> Callable[[F], F]:
    """These path parameters match these regular expressions (the document says which are well-formed)."""
    def decorate(handler: F) -> F:
        handler._path_patterns = patterns  # type: ignore[attr-defined]  # read by web.openapi
        return handler
    return decorate


def documents_idempotency_key(*, required: bool) -> Callable[[F], F]:
    """The operation takes an Idempotency-Key header (listed in its /openapi.json parameters)."""
    def decorate(handler: F) -> F:
        handler._idempotency_key = required  # type: ignore[attr-defined]  # read by web.openapi
        return handler
    return decorate


def install_schema(app: Quart, title: str) -> None:
    """QuartSchema (request validation, /openapi.json), minus its per-response cost for plain
    JSON: it builds a pydantic TypeAdapter for every dict a handler returns (~70 µs a response);
    our handlers return JSON-ready dicts, so those go straight to Quart."""
    app.url_map.converters["oid"] = ObjectIdConverter
    plain = app.make_response
    QuartSchema(app, info={"title": title, "version": "1"}, redoc_ui_path=None, scalar_ui_path=None,
                pydantic_dump_options={"by_alias": True}, openapi_provider_class=TruthfulOpenAPI)
    converting = app.make_response

    async def make_response(result: Any) -> Any:
        value = result[0] if isinstance(result, tuple) else result
        return await (plain if isinstance(value, (dict, list)) else converting)(result)

    app.make_response = make_response  # type: ignore[method-assign]
