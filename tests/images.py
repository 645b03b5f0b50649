"""Real image files for tests, made with Pillow: photos with EXIF (GPS included), transparent
PNGs, and a decompression bomb (a small file whose header announces a huge image)."""
from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def photo(width: int = 640, height: int = 480, *, fmt: str = "JPEG", gps: bool = True, orientation: int = 1,
          copyright: str = "") -> bytes:
    """A gradient photo; with EXIF (a GPS position, a camera orientation, a copyright) when asked."""
    image = Image.new("RGB", (width, height))
    image.putdata([((x * 255) // max(width - 1, 1), (y * 255) // max(height - 1, 1), 128)
                   for y in range(height) for x in range(width)])
    exif = Image.Exif()
    if gps:
        exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)}  # GPSInfo
    if orientation != 1:
        exif[0x0112] = orientation
    if copyright:
        exif[0x8298] = copyright
    out = io.BytesIO()
    image.save(out, fmt, exif=exif.tobytes(), **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


def transparent_png(width: int = 200, height: int = 100) -> bytes:
    image = Image.new("RGBA", (width, height), (255, 0, 0, 0))
    image.paste((0, 0, 255, 255), (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def bomb(side: int = 30000) -> bytes:
    """A PNG announcing side×side pixels in a few kilobytes (one colour, deflated)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\x00" + b"\x00" * side  # filter byte, then one grey byte a pixel
    squeezer = zlib.compressobj(9)
    body = b"".join(squeezer.compress(row) for _ in range(64)) + squeezer.flush()  # only the first rows
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def size_of(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def format_of(data: bytes) -> str:
    return str(Image.open(io.BytesIO(data)).format)


def exif_of(data: bytes) -> dict[int, object]:
    return dict(Image.open(io.BytesIO(data)).getexif())
