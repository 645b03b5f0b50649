"""The image service's HTTP surface: originals at `/uploads/<name>`, variants in Cloudflare's URL
format at `/cdn-cgi/image/<options>/<source>`, and the upload and discard base calls (signed,
never routed by the gateway)."""
from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

from quart import Blueprint, Response, request
from quart_schema import document_response, hide

from durable import env
from durable.observe.probes import LastKnown
from durable.r2 import R2Object, R2ObjectBody
from models.errors import ApiError
from models.health import Health, node_ready
from models.web import documents_errors, documents_file, documents_path_patterns

from . import library, metrics
from .options import PATTERN as OPTIONS_PATTERN
from .options import Transform, TransformError, choose_format, parse
from .pool import ResizePool
from .render import MEDIA_TYPES, probe, render

bp = Blueprint("images", __name__)

# an image is only ever an image: no sniffing it into HTML, no scripts, no inline rendering tricks
SAFE_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; sandbox",
                "Cross-Origin-Resource-Policy": "cross-origin"}
CODES = {9401: "invalid_options", 9404: "not_found", 9412: "not_an_image", 9413: "image_too_large"}


def pool() -> ResizePool:
    return env.isolate_state("resize_pool", lambda: ResizePool(_limit("RESIZE_WORKERS", 0), _limit("RESIZE_QUEUE", 0)))


def _limit(name: str, default: int) -> int:
    return int(env.get(name, default) or default)


def refused(error: TransformError) -> ApiError:
    """Cloudflare's answer to a transformation it will not make: its status, and the code in `Cf-Resized`."""
    metrics.REFUSED.labels(CODES.get(error.code, "other")).inc()
    return ApiError(error.status, CODES.get(error.code, "invalid_options"), error.message,
                    headers={"Cf-Resized": f"err={error.code}"})


def _preconditions_sent() -> tuple[bool, bool]:
    """(a cache's revalidation was asked: 304 on a match, a precondition was: 412 on a miss)"""
    headers = request.headers
    return ("If-None-Match" in headers or "If-Modified-Since" in headers,
            "If-Match" in headers or "If-Unmodified-Since" in headers)


async def _stream(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        yield chunk


def _answer(found: R2Object, headers: dict[str, str], ranged: bool = False) -> Response:
    """A stored image as an HTTP answer: 200 (or 206 for a range), 304 or 412 when its
    conditions did not hold (R2 then gives the metadata alone)."""
    if not isinstance(found, R2ObjectBody):
        revalidating, _ = _preconditions_sent()
        status = 304 if revalidating and request.method in ("GET", "HEAD") else 412
        return Response(b"", status=status, headers={k: v for k, v in headers.items() if k.lower() != "content-type"})
    headers["Accept-Ranges"] = "bytes"
    offset, length = found.range["offset"], found.range["length"]  # type: ignore[index]
    headers["Content-Length"] = str(length)
    status = 200
    if ranged and (offset, length) != (0, found.size):
        status = 206
        headers["Content-Range"] = f"bytes {offset}-{offset + length - 1}/{found.size}"
    return Response(_stream(found.body), status=status, headers=headers)


@bp.get("/uploads/<name>")
@documents_file("image/*")
@documents_path_patterns(name=library.ORIGINAL.pattern)
@documents_errors(412)
async def original(name: str) -> Any:
    """A product image as it was uploaded (conditional and range requests answered)."""
    key = library.original_key(name)
    if key is None:
        raise ApiError(404, "not_found", "No such image")
    found = await env.IMAGES.get(key, onlyIf=request.headers, range=request.headers)
    if found is None:
        raise ApiError(404, "not_found", "No such image")
    headers = library.headers_of(found, **SAFE_HEADERS)
    headers["Content-Disposition"] = f'inline; filename="{name}"'  # our own random hex name
    return _answer(found, headers, ranged="Range" in request.headers)


def _source_key(source: str) -> str:
    """The bucket key of a transformation's source: an image of ours, by its path."""
    if source.startswith(("http:", "https:", "//")):
        raise TransformError(9401, 403, "only this shop's own images are transformed")
    path = "/" + source.lstrip("/")
    if path.startswith("/api/"):
        path = path[len("/api"):]
    key = library.original_key(path.removeprefix("/uploads/")) if path.startswith("/uploads/") else None
    if key is None:
        raise TransformError(9404, 404, f"no image at {path}")
    return key


_making: dict[str, asyncio.Future[R2Object]] = {}  # variants being rendered in this process: each once


@bp.get("/cdn-cgi/image/<options>/<path:source>")
@hide  # any other source: someone else's URL (403) or a path with no image of ours (404), as Cloudflare answers
async def transform_elsewhere(options: str, source: str) -> Any:
    return await _transform(options, source)


@bp.get("/cdn-cgi/image/<options>/uploads/<name>")
@documents_file("image/*")
@documents_path_patterns(options=OPTIONS_PATTERN, name=library.ORIGINAL.pattern)
@documents_errors(400, 403, 412, 415, 429, 503)
async def transform(options: str, name: str) -> Any:
    """A variant of one of our images, in Cloudflare's URL format: `width`/`w`, `height`/`h`,
    `fit` (scale-down, contain, cover, crop, pad, squeeze), `quality`/`q`, `format`/`f` (auto picks
    AVIF or WebP from Accept), `dpr`, `background`, `gravity`/`g`, `metadata` (copyright by
    default: EXIF and GPS are stripped), `blur`, `sharpen`, `rotate`, `flip`. Made once, kept in
    the bucket, answered with a long immutable Cache-Control and an ETag."""
    return await _transform(options, f"uploads/{name}")


async def _transform(options: str, source: str) -> Any:
    try:
        asked = parse(options, _limit("MAX_OUTPUT_DIMENSION", 4096))
        key = _source_key(source)
    except TransformError as exc:
        raise refused(exc) from None
    bucket = env.IMAGES
    suffix = key.rsplit(".", 1)[1]
    source_format = {"jpg": "jpeg"}.get(suffix, suffix)
    alpha = source_format == "png"
    if source_format == "webp" and asked.format in (None, "auto"):  # a fallback would depend on transparency
        found_source = await bucket.head(key)
        if found_source is None:
            raise refused(TransformError(9404, 404, "no such image"))
        alpha = (found_source.customMetadata or {}).get("alpha", "1") == "1"
    chosen = asked.with_format(choose_format(asked, request.headers.get("Accept", ""), source_format, alpha))
    key_of_variant = library.variant_key(key, chosen)
    extra = {**SAFE_HEADERS, **({"Vary": "Accept"} if asked.format == "auto" else {})}
    found = await bucket.get(key_of_variant, onlyIf=request.headers)  # a kept variant: one read, no source read
    outcome = "h"
    if found is None:
        outcome = "m"
        await _make(bucket, key, key_of_variant, chosen)
        found = await bucket.get(key_of_variant, onlyIf=request.headers)  # its conditions hold for a fresh one too
        if found is None:  # removed as soon as made (a bucket emptied by hand)
            raise ApiError(503, "images_busy", "The image could not be kept; try again", headers={"Retry-After": "1"})
    metrics.VARIANTS.labels("hit" if outcome == "h" else "miss").inc()
    return _answer(found, library.headers_of(found, **extra, **{"Cf-Resized": f"internal=ok/{outcome}"}))


async def _make(bucket: Any, source: str, key: str, chosen: Transform) -> R2Object:
    """Render the variant (once per process, however many ask at once) within the source's
    budget of new variants for the day, and keep it."""
    making = _making.get(key)
    if making is not None:
        return await asyncio.shield(making)
    future: asyncio.Future[R2Object] = asyncio.get_running_loop().create_future()
    _making[key] = future
    try:
        stored = await _render_and_keep(bucket, source, key, chosen)
        future.set_result(stored)
        return stored
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: nobody else may be waiting
        raise
    finally:
        del _making[key]


async def _render_and_keep(bucket: Any, source: str, key: str, chosen: Transform) -> R2Object:
    body = await bucket.get(source)
    if not isinstance(body, R2ObjectBody):
        raise refused(TransformError(9404, 404, "no such image"))
    budget = _limit("VARIANTS_PER_SOURCE_PER_DAY", 50)
    today = dt.datetime.now(dt.UTC)
    budgets = env.VARIANT_BUDGET
    if not await budgets.get(budgets.idFromName(source)).take(today.strftime("%Y-%m-%d"), budget):
        metrics.REFUSED.labels("variant_limit").inc()
        tomorrow = (today + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        raise ApiError(429, "variant_limit", f"This image has had its {budget} new variants for today; "
                       "use one already made", headers={"Retry-After": str(int((tomorrow - today).total_seconds()) + 1)})
    data = await body.bytes()
    started = time.perf_counter()
    try:
        rendered = await pool().run(render, data, chosen, _limit("MAX_SOURCE_PIXELS", 40_000_000),
                                    _limit("MAX_OUTPUT_BYTES", 10 * 1024 * 1024))
    except TransformError as exc:
        raise refused(exc) from None
    metrics.RENDER_SECONDS.observe(time.perf_counter() - started)
    return await library.save_variant(bucket, key, rendered, MEDIA_TYPES[chosen.format or "jpeg"], source)


@bp.post("/images")
@hide  # base's call (signed), never routed by the gateway
async def upload() -> Any:
    """Store a product image: checked by decoding it whole in the pool (JPEG, PNG or WebP, within
    the pixel limit), its metadata (a camera's GPS position…) taken out; nothing written when it
    is refused. 201 with its `/uploads/…` path."""
    limit = _limit("MAX_UPLOAD_BYTES", 5 * 1024 * 1024)
    if (request.content_length or 0) > limit:
        raise ApiError(413, "payload_too_large", f"productImage is larger than {limit // (1024 * 1024)} MB")
    data = await request.get_data()
    if len(data) > limit:
        raise ApiError(413, "payload_too_large", f"productImage is larger than {limit // (1024 * 1024)} MB")
    try:
        found, data = await pool().run(probe, data, _limit("MAX_SOURCE_PIXELS", 40_000_000))
    except TransformError as exc:
        metrics.REFUSED.labels(CODES.get(exc.code, "other")).inc()
        if exc.code == 9413:
            raise ApiError(413, "payload_too_large", f"productImage: {exc.message}") from None
        raise ApiError(415, "unsupported_media_type", "productImage must be a JPEG, PNG or WebP image") from None
    path = await library.save_original(env.IMAGES, data, found)
    metrics.UPLOADS.inc()
    return {"path": path, "width": found.width, "height": found.height}, 201


@bp.delete("/images/<name>")
@hide  # base's call (signed): an upload whose product was never written
async def discard(name: str) -> Any:
    key = library.original_key(name)
    if key is not None:
        await env.IMAGES.delete(key)
    return Response(b"", status=204)


async def _bucket_answers(bucket: Any) -> dict[str, Any]:
    try:
        await asyncio.wait_for(bucket.head("health/probe"), 5)
        return {"status": "ok"}
    except Exception as exc:  # noqa: BLE001 (a store that fails or hangs: not ready)
        return {"status": "down", "error": type(exc).__name__}


@bp.get("/health")
@document_response(Health, 200)
@document_response(Health, 503)
async def health() -> Any:
    """Readiness: the bucket answers (as last checked, in the background: a slow store never slows
    the probe) and, in a cluster, this node has joined (the variant budgets are objects)."""
    bucket = env.IMAGES
    check: LastKnown[dict[str, Any]] = env.isolate_state("bucket_check", lambda: LastKnown(
        lambda: _bucket_answers(bucket)))
    found, age = await check.read(0.5)
    store = LastKnown.reported(found, age, {"status": "down", "error": "no answer yet"})
    node = env.node()
    ok = store["status"] == "ok" and node_ready(node)
    body = Health.now(env.SERVICE_NAME, env.ENVIRONMENT, "ok" if ok else "degraded").model_dump()
    busy = pool()
    body.update(bucket=store, resize={"workers": busy.workers, "busy": busy.busy, "capacity": busy.capacity},
                node=node)
    return body, 200 if ok else 503
