"""The image service in a real `wrangler dev` (base and images in one process, as in dev):
cold variants per second against Pillow alone doing the same work in a pool of the same size;
a cached variant against a plain read of an original of about its size; and base's
`GET /products/:id` p99 while variants are rendered at full load, against idle (the event loop
must not be what the resizing blocks)."""
from __future__ import annotations

import asyncio
import io
import json
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from PIL import Image

from images.options import parse
from images.pool import NICENESS
from images.render import render

from . import load
from .base_bench import DevSession, _post

WORKERS = 1  # one pool process: the other core runs the server and the load generator
MAX_PIXELS, MAX_BYTES = 40_000_000, 10 * 1024 * 1024


def _photo(width: int, height: int) -> bytes:
    """Photo-like: detail everywhere (noise over gradients), so decoding and encoding cost what a real one does."""
    gradient = Image.linear_gradient("L").resize((width, height))
    image = Image.merge("RGB", (gradient, Image.effect_noise((width, height), 64), gradient.transpose(
        Image.Transpose.ROTATE_180)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def _store(url: str, data: bytes) -> str:
    request = urllib.request.Request(url + "/images", data=data, method="POST",
                                     headers={"content-type": "application/octet-stream",
                                              "x-service-caller": "rest-shop-api"})  # as base calls it (dev: unsigned)
    with urllib.request.urlopen(request, timeout=30) as resp:
        return str(json.loads(resp.read())["path"])


def _pillow_alone(data: bytes, widths: list[int]) -> float:
    """Variants per second: the same renders, one after another on one core (what the pool's one
    process could do with no service around it)."""
    transforms = [parse(f"width={w},format=webp", 4096).with_format("webp") for w in widths]
    render(data, transforms[0], MAX_PIXELS, MAX_BYTES)  # warm
    started = time.perf_counter()
    for transform in transforms:
        render(data, transform, MAX_PIXELS, MAX_BYTES)
    return len(transforms) / (time.perf_counter() - started)


async def bench_images(quick: bool) -> dict[str, Any]:
    variants = 10 if quick else 60
    reads = 300 if quick else 3000
    source = _photo(2400, 1600)
    with tempfile.TemporaryDirectory() as tmp:
        dev = DevSession(Path(tmp), workers=("base", "images"),
                         variables={"VARIANTS_PER_SOURCE_PER_DAY": "1000000", "RESIZE_WORKERS": str(WORKERS)})
        try:
            images, base = dev.urls["rest-shop-images"], dev.urls["rest-shop-api"]
            path = _store(images, source)
            small = _store(images, _photo(400, 300))
            widths = list(range(200, 200 + variants))
            warm = await load.run(images, lambda i: ("GET", f"/cdn-cgi/image/width={190 + i},format=webp{path}",
                                                     None, {}), requests=4, concurrency=2)  # the pool started
            assert warm["errors"] == 0, warm
            started = time.perf_counter()
            cold = await load.run(images, lambda i: ("GET", f"/cdn-cgi/image/width={widths[i]},format=webp{path}",
                                                     None, {}), requests=variants, concurrency=2 * WORKERS)
            cold_per_s = variants / (time.perf_counter() - started)
            alone = _pillow_alone(source, [w + variants for w in widths])
            variant_url = f"/cdn-cgi/image/width=400,format=jpeg{path}"
            cached = plain = None
            for _ in range(2):  # alternating, the second round counts
                cached = await load.run(images, lambda i: ("GET", variant_url, None, {}), requests=reads, concurrency=32)
                plain = await load.run(images, lambda i: ("GET", small, None, {}), requests=reads, concurrency=32)
            product = _post(base + "/products", {"name": "Bench item", "price": 9.99, "stock": 10**9},
                            dev.token("admin"))["_id"]
            get = lambda i: ("GET", f"/products/{product}", None, {})
            ratios, idle_p99, busy_p99, throughout = [], [], [], True
            more = iter(range(2 * variants + 200, 10**6))
            for _ in range(5):  # idle and busy alternate; the median pair counts
                idle = await load.run(base, get, requests=reads, concurrency=8)
                fresh = [next(more) for _ in range(variants * 4)]  # widths never asked for: each one rendered
                resizing = asyncio.ensure_future(load.run(  # the pool kept full: as many as it takes at once
                    images, lambda i, w=fresh: ("GET", f"/cdn-cgi/image/width={w[i]},format=webp{path}", None, {}),
                    requests=len(fresh), concurrency=2 * WORKERS))
                busy = await load.run(base, get, requests=reads, concurrency=8)
                throughout = throughout and not resizing.done()
                assert (await resizing)["errors"] == 0
                idle_p99.append(idle["p99_ms"])
                busy_p99.append(busy["p99_ms"])
                ratios.append(busy["p99_ms"] / idle["p99_ms"])
        finally:
            dev.stop()
    assert cached is not None and plain is not None
    return {
        "cold_variants_per_second_vs_pillow_alone": {
            "service": round(cold_per_s, 1), "pillow_alone": round(alone, 1),
            "ratio": round(cold_per_s / alone, 3), "target": 0.8, "pool_processes": WORKERS,
            "errors": cold["errors"]},  # the pool takes two jobs a process: the clients never ask more
        "cached_variant_vs_plain_bucket_read": {
            "cached_rps": cached["rps"], "plain_rps": plain["rps"], "ratio": round(cached["rps"] / plain["rps"], 3),
            "cached_p99_ms": cached["p99_ms"], "plain_p99_ms": plain["p99_ms"], "target": 0.9},
        "base_get_product_p99_while_resizing": {
            "idle_p99_ms": idle_p99, "resizing_p99_ms": busy_p99, "ratio": round(statistics.median(ratios), 3),
            "target": 1.5, "resizing_throughout": throughout, "pool_niceness": NICENESS},
    }
