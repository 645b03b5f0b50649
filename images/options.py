"""Cloudflare's image transformation options (`/cdn-cgi/image/<options>/<source>`): parsed,
checked and put in one canonical form, so two URLs asking for the same image name one variant.

Names and values as Cloudflare documents them (full names and the short ones: w, h, q, f, g);
options Cloudflare has that change nothing here (anim, onerror, compression…) are accepted and
ignored; an unknown option or a bad value is a `TransformError` (Cloudflare's 9401, a 400).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import ImageColor

FITS = ("scale-down", "contain", "cover", "crop", "pad", "squeeze")
FORMATS = ("auto", "avif", "webp", "jpeg", "baseline-jpeg", "png", "json")
SIDES = {"left": (0.0, 0.5), "right": (1.0, 0.5), "top": (0.5, 0.0), "bottom": (0.5, 1.0), "center": (0.5, 0.5),
         # saliency and faces are not detected here: the centre, as Cloudflare falls back to
         "auto": (0.5, 0.5), "face": (0.5, 0.5), "entropy": (0.5, 0.5)}
QUALITIES = {"high": 90, "medium-high": 70, "medium-low": 50, "low": 35}
ALIASES = {"w": "width", "h": "height", "q": "quality", "f": "format", "g": "gravity"}
IGNORED = frozenset({"anim", "onerror", "compression", "slow-connection-quality", "scq", "zoom", "face-zoom"})
_COORDINATES = re.compile(r"^(0(?:\.\d+)?|1(?:\.0+)?)x(0(?:\.\d+)?|1(?:\.0+)?)$")
MAX_DPR = 4.0
_ONE = (r"((width|w|height|h)=[1-9][0-9]{0,3}|fit=(scale-down|contain|cover|crop|pad|squeeze)"
        r"|(quality|q)=([1-9][0-9]?|100|high|medium-high|medium-low|low)"
        r"|(format|f)=(auto|avif|webp|jpeg|baseline-jpeg|png|json)|dpr=([0-3](\.[0-9]+)?|4)"
        r"|metadata=(keep|copyright|none)|blur=[0-9]{1,3}|sharpen=(10|[0-9](\.[0-9]+)?)"
        r"|(gravity|g)=(auto|face|entropy|left|right|top|bottom|center|(0(\.[0-9]+)?|1)x(0(\.[0-9]+)?|1))"
        r"|background=(#[0-9a-fA-F]{3,8}|[a-z]{3,20})|rotate=(90|180|270)|flip=(h|v|hv))")
PATTERN = f"^{_ONE}(,{_ONE})*$"  # well-formed options, for the API document (repeats and limits are checked here)


class TransformError(ValueError):
    """A request Cloudflare's image service refuses: its error code, HTTP status and why."""

    def __init__(self, code: int, status: int, message: str) -> None:
        super().__init__(message)
        self.code, self.status, self.message = code, status, message

    def __reduce__(self) -> tuple[type, tuple[int, int, str]]:  # raised in a pool process, re-raised here
        return type(self), (self.code, self.status, self.message)


def invalid(message: str) -> TransformError:
    return TransformError(9401, 400, message)


@dataclass(frozen=True)
class Transform:
    width: int | None = None
    height: int | None = None
    fit: str = "scale-down"  # Cloudflare's behaviour when none is given
    quality: int = 85
    format: str | None = None  # None: the source's own
    dpr: float = 1.0
    background: tuple[int, int, int, int] | None = None
    gravity: tuple[float, float] = (0.5, 0.5)
    metadata: str = "copyright"  # Cloudflare's default: the copyright tag stays, GPS and the rest go
    blur: int = 0
    sharpen: float = 0.0
    rotate: int = 0
    flip: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def canonical(self) -> str:
        """One spelling per variant: what its cache key is made of (format resolved by the caller)."""
        parts = [f"w={self.width}", f"h={self.height}", f"fit={self.fit}", f"q={self.quality}",
                 f"f={self.format}", f"dpr={self.dpr:g}", f"bg={self.background}",
                 f"g={self.gravity[0]:g}x{self.gravity[1]:g}", f"meta={self.metadata}", f"blur={self.blur}", f"sharpen={self.sharpen:g}",
                 f"rotate={self.rotate}", f"flip={self.flip}", f"x={sorted(self.extra.items())}"]
        return ",".join(parts)

    def target(self) -> tuple[int | None, int | None]:
        """The box asked for, in pixels, the device pixel ratio applied."""
        scale = self.dpr
        return (round(self.width * scale) if self.width else None, round(self.height * scale) if self.height else None)

    def with_format(self, chosen: str) -> Transform:
        return replace(self, format=chosen)


def _int(name: str, value: str, low: int, high: int) -> int:
    try:
        number = int(float(value)) if re.fullmatch(r"\d+(\.0+)?", value) else None
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise invalid(f"{name} must be a whole number from {low} to {high}, not {value!r}")
    return number


def _float(name: str, value: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except ValueError:
        number = None  # type: ignore[assignment]
    if number is None or not low <= number <= high:  # (NaN compares false: refused too)
        raise invalid(f"{name} must be a number from {low:g} to {high:g}, not {value!r}")
    return number


def parse(text: str, max_dimension: int) -> Transform:
    """`width=400,fit=cover,format=auto` → a Transform; a TransformError names what is wrong."""
    if not text:
        raise invalid("at least one option is required")
    values: dict[str, Any] = {}
    for item in text.split(","):
        name, equals, value = item.partition("=")
        name = ALIASES.get(name.strip(), name.strip())
        if not equals or not value or " " in item:
            raise invalid(f"option {item!r} is not name=value")
        if name in values:
            raise invalid(f"option {name} is given twice")
        if name in IGNORED:
            continue
        if name in ("width", "height"):
            values[name] = _int(name, value, 1, max_dimension)
        elif name == "format":
            values[name] = _one_of(name, value, FORMATS)
            if value == "baseline-jpeg":
                values[name] = "jpeg"
                values.setdefault("extra", {})["baseline"] = True
        elif name in _READERS:
            values[name] = _READERS[name](value)
        else:
            raise invalid(f"unknown option {name!r}")
    transform = Transform(**values)
    for side in transform.target():
        if side is not None and side > max_dimension:
            raise TransformError(9413, 403, f"the image would be {side} px on a side; at most {max_dimension} "
                                            "are allowed")
    return transform


def _one_of(name: str, value: str, allowed: Any, said: str | None = None) -> str:
    if value not in allowed:
        raise invalid(said or f"{name} must be one of {', '.join(allowed)}")
    return value


def _background(value: str) -> tuple[int, int, int, int]:
    try:
        colour = ImageColor.getcolor(value, "RGBA")
    except ValueError:
        raise invalid(f"background {value!r} is not a CSS colour") from None
    return colour if isinstance(colour, tuple) else (colour, colour, colour, 255)  # type: ignore[return-value]


def _gravity(value: str) -> Any:
    if value in SIDES:
        return SIDES[value]
    if match := _COORDINATES.match(value):
        return float(match.group(1)), float(match.group(2))
    raise invalid("gravity is auto, face, left, right, top, bottom, center or XxY (0 to 1)")


def _rotate(value: str) -> int:
    degrees = _int("rotate", value, 0, 360)
    if degrees % 90:
        raise invalid("rotate is 90, 180 or 270")
    return degrees % 360


# how each option's value is read (width, height and format, which need more, are in parse)
_READERS: dict[str, Callable[[str], Any]] = {
    "fit": lambda value: _one_of("fit", value, FITS),
    "quality": lambda value: QUALITIES[value] if value in QUALITIES else _int("quality", value, 1, 100),
    "dpr": lambda value: _float("dpr", value, 0.1, MAX_DPR),
    "background": _background,
    "gravity": _gravity,
    "metadata": lambda value: _one_of("metadata", value, ("keep", "copyright", "none"),
                                      "metadata is keep, copyright or none"),
    "blur": lambda value: _int("blur", value, 0, 250),
    "sharpen": lambda value: _float("sharpen", value, 0, 10),
    "rotate": _rotate,
    "flip": lambda value: _one_of("flip", value, ("h", "v", "hv"), "flip is h, v or hv"),
}


def accepted(accept: str) -> set[str]:
    """The media types an Accept header names with a quality above 0 (`image/avif;q=0` refuses it)."""
    named = set()
    for item in accept.split(","):
        kind, *parameters = (part.strip() for part in item.split(";"))
        quality = next((p[2:] for p in parameters if p.lower().startswith("q=")), "1")
        try:
            wanted = float(quality) > 0
        except ValueError:
            wanted = False
        if kind and wanted:
            named.add(kind.lower())
    return named


def choose_format(transform: Transform, accept: str, source_format: str, has_alpha: bool) -> str:
    """The output format: as asked, or for `auto` AVIF, then WebP, as the Accept header allows,
    else the source's own (JPEG for a photo, PNG where there is transparency)."""
    asked = transform.format
    if asked not in (None, "auto"):
        return asked
    if asked == "auto":
        named = accepted(accept)
        if "image/avif" in named:
            return "avif"
        if "image/webp" in named:
            return "webp"
    if source_format in ("jpeg", "png"):
        return source_format
    return "png" if has_alpha else "jpeg"  # a WebP source for a client that takes neither new format
