"""Static assets (`assets` in the config): a folder served as Cloudflare serves a Worker's assets.

A GET or HEAD that matches a file is answered from the folder without running the worker
(unless `run_worker_first` says otherwise for its path); anything else goes to the worker, which
can reach the folder through `env.ASSETS.fetch(request)`. `html_handling` maps pretty URLs to
`.html` files (and redirects the ugly ones), `not_found_handling` answers a miss (a single-page
app's `index.html`, the nearest `404.html`, or an empty 404). Content types are Cloudflare's
(`text/*` with `; charset=utf-8`), ETags strong, a matching `If-None-Match` a 304.
"""
from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from .http import Request, Response, make_request

# as the `mime` package Cloudflare's asset server uses names them (Python's tables differ by version)
_TYPES = {".html": "text/html", ".htm": "text/html", ".css": "text/css", ".js": "text/javascript",
          ".mjs": "text/javascript", ".json": "application/json", ".map": "application/json",
          ".txt": "text/plain", ".md": "text/markdown", ".csv": "text/csv", ".xml": "application/xml",
          ".svg": "image/svg+xml", ".ico": "image/vnd.microsoft.icon", ".png": "image/png", ".jpg": "image/jpeg",
          ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp", ".avif": "image/avif",
          ".wasm": "application/wasm", ".woff": "font/woff", ".woff2": "font/woff2", ".ttf": "font/ttf",
          ".otf": "font/otf", ".pdf": "application/pdf", ".mp4": "video/mp4", ".webm": "video/webm",
          ".mp3": "audio/mpeg", ".wav": "audio/wav", ".webmanifest": "application/manifest+json"}
CACHE_CONTROL = "public, max-age=0, must-revalidate"  # Cloudflare's default for assets


def content_type(path: Path) -> str:
    kind = _TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"{kind}; charset=utf-8" if kind.startswith("text/") else kind


@dataclass(frozen=True)
class Found:
    """A match: a file to serve (with its status), or a redirect to the canonical path."""
    file: Path | None = None
    redirect: str | None = None
    status: int = 200


class Assets:
    def __init__(self, directory: Path, *, html_handling: str = "auto-trailing-slash",
                 not_found_handling: str = "none", run_worker_first: bool | list[str] = False) -> None:
        self.directory = directory.resolve()
        self.html_handling = html_handling
        self.not_found_handling = not_found_handling
        self.run_worker_first = run_worker_first
        self._etags: dict[tuple[Path, int, int], str] = {}

    def worker_first(self, path: str) -> bool:
        """Does the worker see this path before the assets (`run_worker_first`: a flag or patterns,
        `!` excluding)? `path` is decoded once, as a server hands it over; it is judged in the
        canonical form `match` looks files up by, so no spelling reaches a file past the worker."""
        path = canonical(path)
        rule = self.run_worker_first
        if isinstance(rule, bool):
            return rule
        wanted = [p for p in rule if not p.startswith("!")]
        excluded = [p[1:] for p in rule if p.startswith("!")]
        return any(fnmatch.fnmatchcase(path, p) for p in wanted) and not any(fnmatch.fnmatchcase(path, p) for p in excluded)

    def match(self, path: str) -> Found | None:
        """The file (or redirect) a request path (decoded once) names, by the html_handling."""
        path = canonical(path)
        if "\x00" in path or "\\" in path or any(part in ("..", ".") for part in path.split("/")):
            return None
        if self.html_handling == "none":
            file = self._file(path)
            return Found(file) if file is not None else None
        if self.html_handling == "auto-trailing-slash":
            return self._pretty(path)
        return self._slashed(path, wanted=self.html_handling == "force-trailing-slash")

    def _slashed(self, path: str, *, wanted: bool) -> Found | None:
        """force-trailing-slash: every HTML page at `/name/`; drop-trailing-slash: at `/name`."""
        if path == "/" or path.endswith((".html", "/index")):
            found = self._pretty(path)  # `/`, and `.html`/`index` spellings redirected as auto does
            if found is None or found.redirect is None or found.redirect == "/":
                return found
            return Found(redirect=found.redirect.rstrip("/") + ("/" if wanted else ""))
        bare = path.rstrip("/")
        page = self._file(bare + ".html") or self._file(bare + "/index.html")
        if page is None:
            file = self._file(path)
            return Found(file) if file is not None else None
        if path.endswith("/") != wanted:
            return Found(redirect=bare + ("/" if wanted else ""))
        return Found(page)

    def _pretty(self, path: str) -> Found | None:
        if path.endswith("/"):
            if (file := self._file(path + "index.html")) is not None:
                return Found(file)
            if path != "/" and self._file(path[:-1] + ".html") is not None:
                return Found(redirect=path[:-1])
            return None
        if path.endswith("/index.html") and self._file(path) is not None:
            return Found(redirect=path[:-len("index.html")])
        if path.endswith("/index") and self._file(path + ".html") is not None:
            return Found(redirect=path[:-len("index")])
        if path.endswith(".html") and self._file(path) is not None:
            return Found(redirect=path[:-len(".html")])
        if (file := self._file(path)) is not None:
            return Found(file)
        if (file := self._file(path + ".html")) is not None:
            return Found(file)
        if self._file(path + "/index.html") is not None:
            return Found(redirect=path + "/")
        return None

    def miss(self, path: str) -> Found | None:
        """What `not_found_handling` answers for a path no file matches."""
        if self.not_found_handling == "single-page-application":
            file = self._file("/index.html")
            return Found(file) if file is not None else None
        if self.not_found_handling == "404-page":
            folder = path.rsplit("/", 1)[0]
            while True:
                if (file := self._file(f"{folder}/404.html")) is not None:
                    return Found(file, status=404)
                if not folder:
                    return None
                folder = folder.rsplit("/", 1)[0]
        return None

    def _file(self, path: str) -> Path | None:
        candidate = (self.directory / path.lstrip("/")).resolve()
        if candidate.is_file() and candidate.is_relative_to(self.directory):
            return candidate
        return None

    async def respond(self, found: Found, method: str, headers: Any, query: str = "") -> Response:
        if found.redirect is not None:  # encoded, and never `//host`: a path on this site
            location = "/" + quote(found.redirect.lstrip("/"), safe="/")
            return Response(None, status=307, headers={"location": location + (f"?{query}" if query else "")})
        assert found.file is not None
        data, etag = await asyncio.to_thread(self._read, found.file)
        answer = {"content-type": content_type(found.file), "etag": etag, "cache-control": CACHE_CONTROL}
        wanted = _etags_in(headers.get("if-none-match"))
        if found.status == 200 and (etag in wanted or "*" in wanted):
            return Response(None, status=304, headers={"etag": etag, "cache-control": CACHE_CONTROL})
        response = Response(b"" if method == "HEAD" else data, status=found.status, headers=answer)
        if method == "HEAD":
            response.headers["content-length"] = str(len(data))
        return response

    def _read(self, file: Path) -> tuple[bytes, str]:
        data = file.read_bytes()
        stat = file.stat()
        key = (file, stat.st_mtime_ns, stat.st_size)
        etag = self._etags.get(key)
        if etag is None:
            etag = self._etags[key] = f'"{hashlib.sha256(data).hexdigest()[:32]}"'
        return data, etag


def canonical(path: str) -> str:
    """One spelling per path: repeated slashes collapsed (`//admin` is `/admin`)."""
    return "/" + "/".join(part for part in (path or "/").split("/") if part) + ("/" if path.endswith("/") and path.strip("/") else "")


def _etags_in(header: str | None) -> set[str]:
    if not header:
        return set()
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


class AssetsBinding:
    """`env.ASSETS`: `fetch(request)` answers from the folder as a direct request would, with
    `not_found_handling` for a miss; only GET and HEAD (405 otherwise)."""

    def __init__(self, assets: Assets) -> None:
        self._assets = assets

    async def fetch(self, input: Request | str, **init: Any) -> Response:
        request = make_request(input, "http://assets.local/", **init)
        if request.method not in ("GET", "HEAD"):
            return Response("Method Not Allowed", status=405, headers={"allow": "GET, HEAD"})
        parts = urlsplit(request.url)
        path = unquote(parts.path or "/")  # decoded once, as a server decodes a request's path
        found = self._assets.match(path) or self._assets.miss(path)
        if found is None:
            return Response(None, status=404)
        return await self._assets.respond(found, request.method, request.headers, parts.query)

    def __repr__(self) -> str:
        return f"<AssetsBinding {self._assets.directory}>"
