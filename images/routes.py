"""The image service's HTTP surface: originals at `/uploads/<name>`, variants in Cloudflare's URL
format at `/cdn-cgi/image/<options>/uploads/<name>`, and the upload and discard only base may
call (never routed by the gateway)."""
from __future__ import annotations

import asyncio
from typing import Any

from quart import Blueprint, Response, request
from quart_schema import document_response, hide

from durable import env
from durable.observe.probes import LastKnown
from durable.r2 import R2Object, R2ObjectBody, holds
from models.health import Health
from web.docs import documents_errors, documents_file, documents_path_patterns
from web.errors import ApiError
from web.health import node_ready, readiness
from web.service_auth import called_by

from . import library, metrics, variants
from .options import PATTERN as OPTIONS_PATTERN
from .options import TransformError, choose_format, parse
from .pool import ResizePool
from .render import probe

bp = Blueprint("images", __name__)

# an image is only ever an image: no sniffing it into HTML, no scripts, no inline rendering tricks
SAFE_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; sandbox",
                "Cross-Origin-Resource-Policy": "cross-origin"}
CODES = {9401: "invalid_options", 9404: "not_found", 9412: "not_an_image", 9413: "image_too_large"}
BASE = "rest-shop-api"  # the one caller that stores and discards images
DEFAULTS = {"MAX_UPLOAD_BYTES": 5 * 1024 * 1024, "MAX_SOURCE_PIXELS": 40_000_000, "MAX_OUTPUT_DIMENSION": 4096,
            "MAX_OUTPUT_BYTES": 10 * 1024 * 1024, "VARIANTS_PER_SOURCE_PER_DAY": 50}


class Bare(Response):
    """An answer without a body (304, 412's headers, HEAD) whose headers are only the ones given:
    no default Content-Type, no Content-Length of the empty body."""
    default_mimetype = None  # type: ignore[assignment]
    automatically_set_content_length = False


def limits() -> dict[str, int]:
    return {name: int(env.get(name, default) or default) for name, default in DEFAULTS.items()}


def pool() -> ResizePool:
    return env.isolate_state("resize_pool", lambda: ResizePool(int(env.get("RESIZE_WORKERS", 0) or 0),
                                                               int(env.get("RESIZE_QUEUE", 0) or 0)))


def refused(error: TransformError) -> ApiError:
    """Cloudflare's answer to a transformation it will not make: its status, and the code in `Cf-Resized`."""
    metrics.REFUSED.labels(CODES.get(error.code, "other")).inc()
    return ApiError(error.status, CODES.get(error.code, "invalid_options"), error.message,
                    headers={"Cf-Resized": f"err={error.code}"})


async def _read(key: str) -> R2Object | None:
    """The stored image under the request's conditions and range (a Range R2 cannot serve gets
    the whole image); a malformed If-Match or date is the client's mistake: 400."""
    try:
        return await env.IMAGES.get(key, onlyIf=request.headers, range=request.headers)
    except TypeError as exc:
        raise ApiError(400, "invalid_header", str(exc)) from None


async def _answer(found: R2Object, headers: dict[str, str]) -> Response:
    """A stored image as an HTTP answer: 200 or 206, or (R2 gave the metadata alone) 412 when a
    precondition failed, else 304 for a cache's revalidation (RFC 9110: If-Match first)."""
    if not isinstance(found, R2ObjectBody):
        strict = {name: value for name in ("If-Match", "If-Unmodified-Since")
                  if (value := request.headers.get(name)) is not None}
        if strict and not holds(strict, found):
            raise ApiError(412, "precondition_failed", "The image does not match If-Match / If-Unmodified-Since",
                           headers={"ETag": found.httpEtag})
        return Bare(None, status=304, headers={k: v for k, v in headers.items() if k.lower() != "content-type"})
    offset, length = found.range["offset"], found.range["length"]  # type: ignore[index]
    headers["Accept-Ranges"] = "bytes"
    headers["Content-Length"] = str(length)
    status = 200
    if "Range" in request.headers and (offset, length) != (0, found.size):
        status = 206
        headers["Content-Range"] = f"bytes {offset}-{offset + length - 1}/{found.size}"
    if request.method == "HEAD":  # its headers, nothing read
        await found.body.aclose()  # type: ignore[attr-defined]
        return Bare(None, status=status, headers=headers)
    return Response(found.body, status=status, headers=headers)


@bp.get("/uploads/<name>")
@documents_file("image/*", ranges=True, revalidated=True)
@documents_path_patterns(name=library.ORIGINAL.pattern)
@documents_errors(412)
async def original(name: str) -> Any:
    """A product image as it was kept (conditional and range requests answered)."""
    key = library.original_key(name)
    found = None if key is None else await _read(key)
    if found is None:
        raise ApiError(404, "not_found", "No such image")
    headers = library.headers_of(found, **SAFE_HEADERS)
    headers["Content-Disposition"] = f'inline; filename="{name}"'  # our own random hex name
    return await _answer(found, headers)


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


@bp.get("/cdn-cgi/image/<options>/<path:source>")
@hide  # any other source: someone else's URL (403) or a path with no image of ours (404), as Cloudflare answers
async def transform_elsewhere(options: str, source: str) -> Any:
    return await _transform(options, source)


@bp.get("/cdn-cgi/image/<options>/uploads/<name>")
@documents_file("image/*", ranges=True, revalidated=True)
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
    bounds = limits()
    try:
        asked = parse(options, bounds["MAX_OUTPUT_DIMENSION"])
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
    found = await _read(key_of_variant)  # a kept variant: one read, its source not read at all
    outcome = "h"
    if found is None:
        outcome = "m"
        try:
            await variants.make(bucket, pool(), key, key_of_variant, chosen, bounds)
        except TransformError as exc:
            raise refused(exc) from None
        found = await _read(key_of_variant)  # the client's conditions hold for a fresh one too
        if found is None:  # removed as soon as made (a bucket emptied by hand)
            raise ApiError(503, "images_busy", "The image could not be kept; try again", headers={"Retry-After": "1"})
    metrics.VARIANTS.labels("hit" if outcome == "h" else "miss").inc()
    extra = {**SAFE_HEADERS, "Cf-Resized": f"internal=ok/{outcome}", **({"Vary": "Accept"} if asked.format == "auto"
                                                                        else {})}
    return await _answer(found, library.headers_of(found, **extra))


def _only_base() -> None:
    if not called_by(BASE):
        raise ApiError(403, "forbidden", "Only the shop's base service stores and discards images")


@bp.post("/images")
@hide  # base's call (signed, naming itself), never routed by the gateway
async def upload() -> Any:
    """Store a product image: checked by decoding it whole in the pool (JPEG, PNG or WebP, within
    the pixel limit), its metadata (a camera's GPS position…) taken out; nothing written when it
    is refused. 201 with its `/uploads/…` path."""
    _only_base()
    bounds = limits()
    limit = bounds["MAX_UPLOAD_BYTES"]
    if (request.content_length or 0) > limit:
        raise ApiError(413, "payload_too_large", f"productImage is larger than {limit // (1024 * 1024)} MB")
    data = await request.get_data()
    if len(data) > limit:
        raise ApiError(413, "payload_too_large", f"productImage is larger than {limit // (1024 * 1024)} MB")
    try:
        with pool().slot():
            found, data = await pool().run(probe, data, bounds["MAX_SOURCE_PIXELS"])
    except TransformError as exc:
        metrics.REFUSED.labels(CODES.get(exc.code, "other")).inc()
        if exc.code == 9413:
            raise ApiError(413, "payload_too_large", f"productImage: {exc.message}") from None
        raise ApiError(415, "unsupported_media_type", "productImage must be a JPEG, PNG or WebP image") from None
    path = await library.save_original(env.IMAGES, data, found)
    metrics.UPLOADS.inc()
    return {"path": path, "width": found.width, "height": found.height}, 201


@bp.delete("/images/<name>")
@hide  # base's call (signed, naming itself): an upload whose product was never written
async def discard(name: str) -> Any:
    _only_base()
    key = library.original_key(name)
    if key is not None:
        await library.delete_source(env.IMAGES, key)
    return Bare(None, status=204)


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
    resize = pool()
    body.update(bucket=store, resize={"workers": resize.workers, "busy": resize.busy, "capacity": resize.capacity},
                node=node)
    return readiness(body, ok)
