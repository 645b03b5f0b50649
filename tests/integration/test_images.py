"""The image service through the gateway: uploads kept in the bucket, served with their caching
headers, variants in Cloudflare's URL format made once and kept, and the limits that protect it."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

import aiohttp
import pytest

from durable.rpc.wire import INTERNAL_AUDIENCE_HEADER
from tests.images import bomb, exif_of, format_of, photo, size_of, transparent_png
from tests.polling import eventually


def product_form(name: str, image: bytes, filename: str = "x.jpg") -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("name", name)
    form.add_field("price", "9.5")
    form.add_field("productImage", image, filename=filename, content_type="application/octet-stream")
    return form


async def upload(shop: Any, image: bytes, name: str = "Pictured") -> tuple[int, Any]:
    status, body, _ = await shop.call("POST", "/api/products", data=product_form(name, image),
                                      token=shop.token("admin"))
    return status, body


async def test_an_upload_is_served_with_caching_headers_ranges_and_304(full_shop) -> None:
    image = photo(320, 240, gps=False)  # (one with GPS is kept without it: it would differ)
    status, body = await upload(full_shop, image)
    assert status == 201 and body["productImage"].startswith("/uploads/") and body["productImage"].endswith(".jpg")
    status, served, headers = await full_shop.call("GET", "/api" + body["productImage"])
    assert status == 200 and served == image and headers["Content-Type"] == "image/jpeg"
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable" and headers["ETag"].startswith('"')
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Content-Security-Policy"].startswith("default")
    status, _, again = await full_shop.call("GET", body["productImage"], headers={"If-None-Match": headers["ETag"]})
    assert status == 304 and again["ETag"] == headers["ETag"]
    status, part, ranged = await full_shop.call("GET", body["productImage"], headers={"Range": "bytes=0-9"})
    assert status == 206 and part == image[:10] and ranged["Content-Range"] == f"bytes 0-9/{len(image)}"
    assert (await full_shop.call("GET", "/uploads/..%2f..%2fetc%2fpasswd"))[0] == 404
    assert (await full_shop.call("GET", "/uploads/" + "0" * 32 + ".jpg"))[0] == 404


async def test_a_variant_is_made_once_in_cloudflares_url_format(full_shop) -> None:
    _, body = await upload(full_shop, photo(800, 600, copyright="Shop Ltd"))
    url = f"/cdn-cgi/image/width=400,format=webp/{body['productImage'].lstrip('/')}"
    status, first, headers = await full_shop.call("GET", url)
    assert status == 200 and headers["Content-Type"] == "image/webp" and headers["Cf-Resized"] == "internal=ok/m"
    assert format_of(first) == "WEBP" and size_of(first) == (400, 300)
    assert "immutable" in headers["Cache-Control"] and "Accept" not in headers.get("Vary", "")
    status, second, again = await full_shop.call("GET", "/api" + url)
    assert status == 200 and second == first and again["Cf-Resized"] == "internal=ok/h"
    assert again["ETag"] == headers["ETag"]
    assert (await full_shop.call("GET", url, headers={"If-None-Match": headers["ETag"]}))[0] == 304
    # the same options spelled otherwise are the same variant
    status, _, short = await full_shop.call("GET", f"/cdn-cgi/image/f=webp,w=400{body['productImage']}")
    assert status == 200 and short["Cf-Resized"] == "internal=ok/h"


async def test_format_auto_follows_accept(full_shop) -> None:
    _, body = await upload(full_shop, photo(600, 400))
    path = body["productImage"]
    answers = {}
    for accept in ("image/avif,image/webp,*/*", "image/avif;q=0,image/webp,*/*", "*/*"):
        status, data, headers = await full_shop.call("GET", f"/cdn-cgi/image/width=300,format=auto{path}",
                                                     headers={"Accept": accept})
        assert status == 200 and "Accept" in headers["Vary"]
        answers[accept] = (headers["Content-Type"], format_of(data))
    assert answers == {"image/avif,image/webp,*/*": ("image/avif", "AVIF"),
                       "image/avif;q=0,image/webp,*/*": ("image/webp", "WEBP"), "*/*": ("image/jpeg", "JPEG")}


async def test_variants_keep_only_the_metadata_asked_for(full_shop) -> None:
    """The source kept as a camera wrote it (as an upload from before the bucket could be), so
    only the variant's own stripping stands between its GPS position and the client."""
    bucket = full_shop.runtime.workers["rest-shop-images"].env.IMAGES
    name = "cd" * 16 + ".jpg"
    await bucket.put(f"uploads/{name}", photo(400, 300, gps=True, copyright="Shop Ltd"))
    exifs = {}
    for metadata in ("", ",metadata=copyright", ",metadata=none", ",metadata=keep"):
        status, jpeg, _ = await full_shop.call("GET", f"/cdn-cgi/image/width=200,format=jpeg{metadata}/uploads/{name}")
        assert status == 200
        exifs[metadata] = exif_of(jpeg)
    assert exifs[""] == exifs[",metadata=copyright"] == {0x8298: "Shop Ltd"}  # GPS gone, copyright kept
    assert exifs[",metadata=none"] == {} and 0x8825 in exifs[",metadata=keep"]


async def test_odd_conditional_and_range_headers_are_4xx_or_ignored_never_500(full_shop) -> None:
    _, body = await upload(full_shop, photo(200, 100, gps=False))
    variant = f"/cdn-cgi/image/width=50{body['productImage']}"
    for path in (body["productImage"], variant):
        for headers in ({"If-Match": "abc"}, {"If-None-Match": "W/abc"}, {"If-Modified-Since": "yesterday"},
                        {"If-Unmodified-Since": "31 Feb"}):
            status, error, _ = await full_shop.call("GET", path, headers=headers)
            assert status == 400 and error["error"]["code"] == "invalid_header", (path, headers, status)
        for odd_range in ("bytes=²-", "bytes=5-2", "bytes=0-1,4-5", "pages=1"):
            status, _, headers = await full_shop.call("GET", path, headers={"Range": odd_range})
            assert status == 200 and "Content-Range" not in headers, (path, odd_range)


async def test_304_and_412_carry_no_body_headers_and_head_reads_nothing(full_shop) -> None:
    image = photo(200, 100, gps=False)
    _, body = await upload(full_shop, image)
    _, _, first = await full_shop.call("GET", body["productImage"])
    etag = first["ETag"]
    status, _, cached = await full_shop.call("GET", body["productImage"], headers={"If-None-Match": etag})
    assert status == 304 and "Content-Type" not in cached and cached.get("Content-Length", "0") in ("0",)
    status, error, _ = await full_shop.call("GET", body["productImage"],
                                            headers={"If-Match": '"stale"', "If-None-Match": etag})
    assert status == 412 and error["error"]["code"] == "precondition_failed"  # If-Match is decided first
    async with full_shop.http.head(full_shop.url + body["productImage"]) as resp:
        assert resp.status == 200 and int(resp.headers["Content-Length"]) == len(image)
        assert resp.headers["Content-Type"] == "image/jpeg"


async def test_only_base_stores_and_discards_images(full_shop) -> None:
    from durable.asgi import asgi_fetch
    from durable.http import Request
    from durable.signing import sign
    from tests.conftest import SERVICE_AUTH_KEY
    from web.service_auth import CALLER_HEADER, SIGNED_HEADERS
    images = full_shop.runtime.workers["rest-shop-images"]
    data = photo(64, 64, gps=False)

    def signed(covering: tuple[str, ...], caller: str | None) -> dict[str, str]:
        headers = {"content-type": "application/octet-stream", INTERNAL_AUDIENCE_HEADER: images.audience,
                   **({CALLER_HEADER: caller} if caller else {})}
        vouched = [(name, headers.get(name, "")) for name in (*SIGNED_HEADERS, *covering)]
        return {**headers, "X-Gateway-Signature": sign(SERVICE_AUTH_KEY, "POST", "/images", data, headers=vouched)}
    answers = []
    for headers in (signed((), None), signed((), "rest-shop-api"), signed((CALLER_HEADER,), "rest-shop-gateway"),
                    signed((CALLER_HEADER,), "rest-shop-api")):
        reply = await asgi_fetch(images, Request("http://images/images", method="POST", headers=headers, body=data))
        answers.append(reply.status)
    assert answers == [403, 403, 403, 201]  # signed by a key holder is not enough: base, and saying so under the signature


@pytest.mark.parametrize(("options", "size"), [
    ("width=200,height=200,fit=scale-down", (200, 100)),
    ("width=2000,fit=scale-down", (400, 200)),  # never enlarged
    ("width=800,height=800,fit=contain", (800, 400)),
    ("width=100,height=100,fit=cover", (100, 100)),
    ("width=100,height=100,fit=crop", (100, 100)),
    ("width=1000,height=1000,fit=crop", (400, 200)),  # smaller than the box: as scale-down
    ("width=100,height=100,fit=pad,background=%23ff0000", (100, 100)),
    ("width=100,height=30,fit=squeeze", (100, 30)),
    ("width=100,dpr=2", (200, 100)),
    ("height=50,rotate=90", (25, 50)),  # turned first: 200×400, then scaled
])
async def test_fit_modes_match_cloudflares(full_shop, options: str, size: tuple[int, int]) -> None:
    _, body = await upload(full_shop, transparent_png(400, 200))
    status, data, headers = await full_shop.call("GET", f"/cdn-cgi/image/{options}{body['productImage']}")
    assert status == 200, data
    assert size_of(data) == size and headers["Content-Type"] == "image/png"


async def test_bad_options_bombs_and_oversized_uploads_are_refused_and_nothing_is_written(full_shop) -> None:
    _, body = await upload(full_shop, photo(64, 64))
    path = body["productImage"]
    for options in ("width=abc", "fit=stretch", "quality=0", "width=100000", "colour=red", "width", "dpr=9"):
        status, error, headers = await full_shop.call("GET", f"/cdn-cgi/image/{options}{path}")
        assert status in (400, 403) and headers["Cf-Resized"].startswith("err=94"), (options, status)
        assert error["error"]["code"] in ("invalid_options", "image_too_large")
    status, error, headers = await full_shop.call("GET", "/cdn-cgi/image/width=10/https://evil.example/x.png")
    assert status == 403 and headers["Cf-Resized"] == "err=9401"
    assert (await full_shop.call("GET", "/cdn-cgi/image/width=10/uploads/" + "a" * 32 + ".png"))[0] == 404
    bucket = full_shop.runtime.workers["rest-shop-images"].env.IMAGES
    before = [o.key for o in (await bucket.list()).objects]
    status, error = await upload(full_shop, bomb(), name="Bomb")
    assert status == 413 and error["error"]["code"] == "payload_too_large" and "pixels" in error["error"]["message"]
    status, error = await upload(full_shop, b"GIF89a" + b"\x00" * 100, name="Not an image")
    assert status == 415 and error["error"]["code"] == "unsupported_media_type"
    status, error = await upload(full_shop, photo(64, 64)[:300], name="Truncated")
    assert status == 415
    big = b"\xff\xd8\xff" + b"\x00" * (50 * 1024 * 1024)
    status, error = await upload(full_shop, big, name="Huge")
    assert status == 413
    assert [o.key for o in (await bucket.list()).objects] == before
    assert full_shop.db()["products"].count_documents({"name": {"$in": ["Bomb", "Huge", "Truncated"]}}) == 0


async def test_a_thousand_widths_of_one_image_make_only_its_daily_budget_of_variants(full_shop) -> None:
    _, body = await upload(full_shop, photo(300, 200))
    path = body["productImage"]
    bucket = full_shop.runtime.workers["rest-shop-images"].env.IMAGES
    widths = iter(range(1, 1001))

    async def client() -> list[int]:  # two at a time: what one pool process takes, so none is refused as busy
        return [(await full_shop.call("GET", f"/cdn-cgi/image/width={w}{path}"))[0] for w in widths]
    statuses = Counter(status for answers in await asyncio.gather(client(), client()) for status in answers)
    assert statuses == {200: 50, 429: 950}  # VARIANTS_PER_SOURCE_PER_DAY
    assert len((await bucket.list(prefix="variants/")).objects) == 50


async def test_a_source_gets_a_bounded_number_of_new_variants_a_day(custom_shop) -> None:
    shop = await custom_shop(images_vars={"VARIANTS_PER_SOURCE_PER_DAY": 5})
    _, body = await upload(shop, photo(300, 200))
    path = body["productImage"]
    statuses = [(await shop.call("GET", f"/cdn-cgi/image/width={w}{path}"))[0] for w in range(50, 58)]
    assert statuses == [200] * 5 + [429] * 3
    status, error, headers = await shop.call("GET", f"/cdn-cgi/image/width=99{path}")
    assert status == 429 and error["error"]["code"] == "variant_limit" and int(headers["Retry-After"]) > 0
    assert (await shop.call("GET", f"/cdn-cgi/image/width=50{path}"))[0] == 200  # made already: free
    _, other = await upload(shop, photo(300, 200), name="Other")
    assert (await shop.call("GET", f"/cdn-cgi/image/width=99{other['productImage']}"))[0] == 200


async def test_the_same_variant_asked_for_at_once_is_rendered_once(full_shop) -> None:
    _, body = await upload(full_shop, photo(1200, 900))
    url = f"/cdn-cgi/image/width=333{body['productImage']}"
    answers = await asyncio.gather(*(full_shop.call("GET", url) for _ in range(8)))
    assert {status for status, _, _ in answers} == {200} and len({data for _, data, _ in answers}) == 1
    budgets = full_shop.runtime.workers["rest-shop-images"].env.VARIANT_BUDGET
    today = time.strftime("%Y-%m-%d", time.gmtime())
    left = await budgets.get(budgets.idFromName("uploads/" + body["productImage"].rsplit("/", 1)[1])).left(today, 50)
    assert left == 49  # one render, whoever asked


async def test_a_full_pool_answers_503_with_retry_after_and_spends_nothing(full_shop) -> None:
    _, body = await upload(full_shop, photo(400, 300))
    images = full_shop.runtime.workers["rest-shop-images"]
    pool = images.env.isolate_state("resize_pool", lambda: None)  # (made by the upload)
    with contextlib.ExitStack() as held:
        for _ in range(pool.capacity):
            held.enter_context(pool.slot())  # every place taken, as by renders under way
        status, error, headers = await full_shop.call("GET", f"/cdn-cgi/image/width=100{body['productImage']}")
        assert status == 503 and error["error"]["code"] == "images_busy" and headers["Retry-After"] == "1"
    budgets = images.env.VARIANT_BUDGET
    source = "uploads/" + body["productImage"].rsplit("/", 1)[1]
    assert await budgets.get(budgets.idFromName(source)).left(time.strftime("%Y-%m-%d", time.gmtime()), 50) == 50
    assert (await full_shop.call("GET", f"/cdn-cgi/image/width=100{body['productImage']}"))[0] == 200


async def test_an_uploaded_photo_is_kept_without_its_gps_position(full_shop) -> None:
    _, body = await upload(full_shop, photo(320, 240, gps=True, copyright="Shop Ltd"))
    status, served, _ = await full_shop.call("GET", body["productImage"])
    assert status == 200 and exif_of(served) == {0x8298: "Shop Ltd"} and size_of(served) == (320, 240)


async def test_an_invalid_product_leaves_no_image_behind(full_shop) -> None:
    bucket = full_shop.runtime.workers["rest-shop-images"].env.IMAGES
    status, body = await upload(full_shop, photo(64, 64), name="")  # refused before its image is sent
    assert status == 400 and body["error"]["code"] == "validation_error"
    admin = full_shop.token("admin")
    await full_shop.call("POST", "/api/products", {"name": "Taken", "price": 1, "sku": "SKU-1"}, token=admin)
    form = product_form("Again", photo(64, 64))
    form.add_field("sku", "SKU-1")
    status, _, _ = await full_shop.call("POST", "/api/products", data=form, token=admin)
    assert status == 409  # the product write failed after the image was kept: the image is discarded
    assert [o.key for o in (await bucket.list(prefix="uploads/")).objects] == []


async def test_uploads_kept_on_disk_by_an_earlier_version_move_into_the_bucket(tmp_path, mongo_uri, monkeypatch) -> None:
    from tests.conftest import open_full_shop, shop_environment
    shop_environment(monkeypatch, mongo_uri)
    legacy = tmp_path / "state" / "v3" / "files" / "rest-shop-api" / "uploads"  # base's folder before the bucket
    legacy.mkdir(parents=True)
    old = photo(100, 80, gps=False)
    (legacy / ("ab" * 16 + ".jpg")).write_bytes(old)
    (legacy / "notes.txt").write_text("not an upload")
    for _ in range(2):  # a restart moves nothing twice
        async with open_full_shop(tmp_path, mongo_uri) as shop:
            bucket = shop.runtime.workers["rest-shop-images"].env.IMAGES
            async def moved(bucket: Any = bucket) -> bool:
                return await bucket.head("uploads/" + "ab" * 16 + ".jpg") is not None
            assert await eventually(moved, 10)  # the move runs beside serving
            status, served, headers = await shop.call("GET", "/uploads/" + "ab" * 16 + ".jpg")
            assert status == 200 and served == old and headers["Content-Type"] == "image/jpeg"
            assert [o.key for o in (await bucket.list()).objects] == ["uploads/" + "ab" * 16 + ".jpg"]
