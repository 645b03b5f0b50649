"""Cloudflare's image options: parsed into one canonical form, refused with its codes; and the
renderer's handling of camera orientation, gravity and `format=json` (Pillow, in process)."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from images.options import TransformError, choose_format, parse
from images.render import probe, render
from tests.images import bomb, exif_of, photo


def test_short_and_full_names_are_one_variant() -> None:
    assert parse("w=400,f=webp,q=80", 4096).canonical() == parse("format=webp,quality=80,width=400", 4096).canonical()
    assert parse("width=400", 4096).canonical() != parse("width=400,fit=cover", 4096).canonical()
    assert parse("quality=high,anim=false,onerror=redirect", 4096).quality == 90  # ignored options pass
    assert parse("gravity=0.25x1,background=red", 4096).gravity == (0.25, 1.0)
    assert parse("background=%23ff000080".replace("%23", "#"), 4096).background == (255, 0, 0, 128)


@pytest.mark.parametrize(("options", "code", "status"), [
    ("", 9401, 400), ("width", 9401, 400), ("width=-1", 9401, 400), ("width=1.5", 9401, 400),
    ("fit=stretch", 9401, 400), ("quality=101", 9401, 400), ("gravity=2x2", 9401, 400),
    ("background=notacolour", 9401, 400), ("rotate=45", 9401, 400), ("width=1,width=2", 9401, 400),
    ("colour=red", 9401, 400), ("width=5000", 9401, 400), ("width=3000,dpr=2", 9413, 403),
])
def test_bad_options_are_refused_with_cloudflares_codes(options: str, code: int, status: int) -> None:
    with pytest.raises(TransformError) as refused:
        parse(options, 4096)
    assert (refused.value.code, refused.value.status) == (code, status)


def test_format_auto_prefers_avif_then_webp_then_the_sources_own() -> None:
    auto = parse("format=auto", 4096)
    assert choose_format(auto, "image/avif,image/webp,*/*", "jpeg", False) == "avif"
    assert choose_format(auto, "image/webp,*/*", "png", True) == "webp"
    assert choose_format(auto, "*/*", "png", True) == "png"
    assert choose_format(auto, "*/*", "webp", False) == "jpeg"
    assert choose_format(parse("width=10", 4096), "image/avif", "jpeg", False) == "jpeg"  # not asked: the source's


def test_the_cameras_orientation_is_applied_before_resizing() -> None:
    sideways = photo(400, 200, orientation=6)  # stored landscape, shown portrait
    out = render(sideways, parse("width=100,format=jpeg", 4096).with_format("jpeg"), 10**8, 10**8)
    shown = Image.open(io.BytesIO(out))
    assert shown.size == (100, 200) and 0x0112 not in shown.getexif()


def test_gravity_picks_which_part_a_cover_crop_keeps() -> None:
    left = render(photo(400, 100), parse("width=100,height=100,fit=cover,gravity=left,format=png", 4096), 10**8, 10**8)
    right = render(photo(400, 100), parse("width=100,height=100,fit=cover,gravity=right,format=png", 4096), 10**8, 10**8)
    red = lambda data: Image.open(io.BytesIO(data)).convert("RGB").getpixel((50, 50))[0]
    assert red(left) < 64 and red(right) > 192  # the gradient runs red from left to right


def test_format_json_describes_the_source() -> None:
    out = json.loads(render(photo(300, 200), parse("format=json", 4096), 10**8, 10**8))
    assert out["original"]["width"] == 300 and out["original"]["format"] == "image/jpeg"


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    with pytest.raises(TransformError) as refused:
        probe(bomb(), 40_000_000)
    assert (refused.value.code, refused.value.status) == (9413, 413)


def test_an_upload_is_kept_as_sent_unless_it_carries_metadata_to_take_out() -> None:
    clean = photo(200, 100, gps=False)
    assert probe(clean, 10**8)[1] == clean
    found, kept = probe(photo(200, 100, gps=True, orientation=6, copyright="Shop Ltd"), 10**8)
    assert (found.width, found.height) == (100, 200)  # the orientation is applied, not left to a tag
    assert exif_of(kept) == {0x8298: "Shop Ltd"}


def test_a_jpeg_comment_counts_as_metadata_and_leaves_with_it() -> None:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(out, "JPEG", comment=b"shot at 12 Acacia Avenue")
    _, kept = probe(out.getvalue(), 10**8)
    assert b"Acacia" in out.getvalue() and b"Acacia" not in kept
    variant = render(out.getvalue(), parse("width=32,format=jpeg", 4096), 10**8, 10**8)
    assert b"Acacia" not in variant
