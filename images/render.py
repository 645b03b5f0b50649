"""The Pillow work, run in the resize pool's processes (never on an event loop): checking an
upload, and rendering one variant. Plain functions of bytes → bytes, so they cross processes.

Sources are refused before they are decoded when their header announces more pixels than
allowed (a decompression bomb costs a header read, nothing more).
"""
from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass

from PIL import Image, ImageFilter, ImageOps

from .options import Transform, TransformError

SOURCE_FORMATS = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp"}
MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "avif": "image/avif",
               "json": "application/json"}
SUFFIXES = {"jpeg": "jpg", "png": "png", "webp": "webp"}
COPYRIGHT_TAG = 0x8298
REVEALING = frozenset({"xmp", "XML:com.adobe.xmp", "comment", "photoshop", "iptc"})  # (EXIF: by its tags)


@dataclass(frozen=True)
class Probe:
    format: str  # jpeg, png or webp
    width: int
    height: int
    has_alpha: bool


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TransformError(9413, 413, f"the image has more than {max_pixels:,} pixels") from None
    except (OSError, ValueError, SyntaxError):
        raise TransformError(9412, 415, "the file is not a JPEG, PNG or WebP image") from None
    if image.format not in SOURCE_FORMATS:
        raise TransformError(9412, 415, "the file is not a JPEG, PNG or WebP image")
    if image.width * image.height > max_pixels:
        raise TransformError(9413, 413, f"the image is {image.width}×{image.height}: more than {max_pixels:,} pixels")
    return image


def probe(data: bytes, max_pixels: int) -> tuple[Probe, bytes]:
    """What an upload is, once it has been decoded whole (a truncated or corrupt file is refused),
    and the bytes to keep: the file as sent, or, when it carries metadata (EXIF with a camera's GPS
    position, XMP, text chunks), the image re-encoded without it (orientation applied, colour
    profile and copyright kept), since originals are served as kept."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    image = _open(data, max_pixels)
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise TransformError(9412, 415, "the image is damaged or incomplete") from None
    fmt = SOURCE_FORMATS[image.format or ""]
    exif = image.getexif()
    # anything beyond pixels, colour profile and copyright: EXIF (GPS, camera, time), XMP, IPTC,
    # comments, PNG text chunks
    revealing = bool(set(exif) - {COPYRIGHT_TAG}) or bool(set(image.info) & REVEALING) \
        or (fmt == "png" and any(isinstance(v, str) for k, v in image.info.items() if k != "icc_profile"))
    if revealing:
        data = _without_metadata(image, fmt, exif)
        image = Image.open(io.BytesIO(data))
    return Probe(fmt, image.width, image.height, _has_alpha(image)), data


def _bare(image: Image.Image) -> Image.Image:
    """The image with nothing but its colour profile left in `info` (Pillow writes a JPEG's
    comment, and more, from there)."""
    image.info = {k: v for k, v in image.info.items() if k == "icc_profile"}
    return image


def _without_metadata(image: Image.Image, fmt: str, exif: Image.Exif) -> bytes:
    kept = Image.Exif()
    if COPYRIGHT_TAG in exif:
        kept[COPYRIGHT_TAG] = exif[COPYRIGHT_TAG]
    icc = image.info.get("icc_profile")
    shown = _bare(ImageOps.exif_transpose(image))
    options: dict[str, object] = {"icc_profile": icc} if icc else {}
    out = io.BytesIO()
    if fmt == "jpeg":
        shown.save(out, "JPEG", quality=95, exif=kept.tobytes() if len(kept) else b"", **options)
    elif fmt == "webp":
        shown.save(out, "WEBP", quality=95, exif=kept.tobytes() if len(kept) else b"", **options)
    else:
        shown.save(out, "PNG", **options)
    return out.getvalue()


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)


def _size(transform: Transform, width: int, height: int) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """(the size to resize to, the box to crop or pad it to, if any)."""
    box_w, box_h = transform.target()
    if box_w is None and box_h is None:
        return (width, height), None
    fit = transform.fit
    if fit == "squeeze":
        return (box_w or width, box_h or height), None
    if box_w is None or box_h is None:  # one side given: the other follows the aspect ratio
        scale = (box_w / width) if box_w else (box_h / height)  # type: ignore[operator]
        if fit in ("scale-down", "crop") and scale > 1:
            scale = 1.0
        return (max(1, round(width * scale)), max(1, round(height * scale))), None
    inside = min(box_w / width, box_h / height)
    outside = max(box_w / width, box_h / height)
    if fit == "scale-down":
        scale = min(inside, 1.0)
    elif fit == "contain":
        scale = inside
    elif fit == "pad":
        scale = inside
        return (max(1, round(width * scale)), max(1, round(height * scale))), (box_w, box_h)
    elif fit == "crop" and outside > 1:  # smaller than the box: as scale-down
        scale = min(inside, 1.0)
    else:  # cover, or crop of a larger image
        scale = outside
        return (max(1, round(width * scale)), max(1, round(height * scale))), (box_w, box_h)
    return (max(1, round(width * scale)), max(1, round(height * scale))), None


def render(data: bytes, transform: Transform, max_pixels: int, max_output_bytes: int) -> bytes:
    """One variant of the source `data`, in the transform's format (chosen by the caller)."""
    out_format = transform.format or "jpeg"
    Image.MAX_IMAGE_PIXELS = max_pixels
    source = _open(data, max_pixels)
    exif = source.getexif()
    icc = source.info.get("icc_profile")
    turned = (exif.get(0x0112, 1) in (5, 6, 7, 8)) != (transform.rotate in (90, 270))  # sides swap once shown
    (width, height), box = _size(transform, *(source.size[::-1] if turned else source.size))
    if out_format == "json":  # the sizes after resizing, and the original's (Cloudflare's shape)
        return json.dumps({"width": (box or (width, height))[0], "height": (box or (width, height))[1],
                           "original": {"file_size": len(data), "width": source.width, "height": source.height,
                                        "format": MEDIA_TYPES[SOURCE_FORMATS[source.format or ""]]}}).encode()
    if source.format == "JPEG" and box is None and not turned:
        source.draft("RGB", (width, height))  # decode at a fraction of the size when that is enough
    image = ImageOps.exif_transpose(source)  # the camera's orientation is applied, whatever metadata says
    image = image.convert("RGBA" if _has_alpha(image) else "RGB")
    if "h" in transform.flip:
        image = ImageOps.mirror(image)
    if "v" in transform.flip:
        image = ImageOps.flip(image)
    if transform.rotate:
        image = image.rotate(-transform.rotate, expand=True)  # clockwise, as Cloudflare turns
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
    if box is not None and transform.fit == "pad":
        colour = transform.background or (255, 255, 255, 255)
        canvas = Image.new(image.mode, box, colour if image.mode == "RGBA" else colour[:3])
        x, y = transform.gravity
        canvas.paste(image, (round((box[0] - width) * x), round((box[1] - height) * y)))
        image = canvas
    elif box is not None:  # cover: crop the overflow, where gravity says
        x, y = transform.gravity
        left, top = round((width - box[0]) * x), round((height - box[1]) * y)
        image = image.crop((left, top, left + box[0], top + box[1]))
    if transform.blur:
        image = image.filter(ImageFilter.GaussianBlur(transform.blur / 2))
    if transform.sharpen:
        image = image.filter(ImageFilter.UnsharpMask(radius=1, percent=round(transform.sharpen * 40), threshold=2))
    output = _encode(_bare(image), transform, out_format, exif, icc)
    if len(output) > max_output_bytes:
        raise TransformError(9413, 403, f"the result would be {len(output):,} bytes; at most {max_output_bytes:,}")
    return output


def _encode(image: Image.Image, transform: Transform, out_format: str, exif: Image.Exif, icc: bytes | None) -> bytes:
    out = io.BytesIO()
    profile: dict[str, object] = {"icc_profile": icc} if icc else {}  # (JPEG and WebP take it only from here)
    if out_format in ("jpeg",) and image.mode == "RGBA":  # no transparency in JPEG: onto the background
        flat = Image.new("RGB", image.size, (transform.background or (255, 255, 255, 255))[:3])
        flat.paste(image, mask=image.getchannel("A"))
        image = flat
    kept = Image.Exif()
    if out_format == "jpeg" and transform.metadata == "keep":
        kept = exif
    elif out_format == "jpeg" and transform.metadata == "copyright" and COPYRIGHT_TAG in exif:
        kept[COPYRIGHT_TAG] = exif[COPYRIGHT_TAG]
    if 0x0112 in kept:  # the orientation was applied to the pixels: it must not be applied again
        del kept[0x0112]
    if out_format == "jpeg":
        image.save(out, "JPEG", quality=transform.quality, progressive=not transform.extra.get("baseline"),
                   optimize=False, exif=kept.tobytes() if len(kept) else b"", **profile)
    elif out_format == "png":
        image.save(out, "PNG", compress_level=6, **profile)
    elif out_format == "webp":
        image.save(out, "WEBP", quality=transform.quality, lossless=transform.quality == 100, method=4, **profile)
    elif out_format == "avif":
        image.save(out, "AVIF", quality=transform.quality, speed=8, **profile)
    else:
        raise TransformError(9401, 400, f"format {out_format} cannot be written")
    return out.getvalue()
