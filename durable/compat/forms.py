"""`Blob`, `File` and `FormData` as Cloudflare's Python Workers SDK has them, and their bodies.

A `FormData` becomes a `multipart/form-data` body when it is a Request's or Response's body;
`form_data()` reads one back (multipart, or `application/x-www-form-urlencoded`). The multipart
wire format is werkzeug's (the parser Quart uses), not ours.
"""
from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from werkzeug.datastructures import Headers
from werkzeug.http import parse_options_header
from werkzeug.sansio import multipart

BlobPart = "str | bytes | bytearray | memoryview | Blob"
MAX_FORM_PARTS = 1000


class Blob:
    """Immutable bytes with a content type: `Blob(["text", b"bytes"], content_type="text/plain")`."""

    def __init__(self, blob_parts: Any = None, content_type: str | None = None) -> None:
        if isinstance(blob_parts, Blob):  # Blob(other) keeps its type unless one is given
            self._data = blob_parts._data
            content_type = blob_parts.content_type if content_type is None else content_type
        else:
            parts = [] if blob_parts is None else (
                [blob_parts] if isinstance(blob_parts, (str, bytes, bytearray, memoryview)) else blob_parts)
            self._data = b"".join(_part_bytes(p) for p in parts)
        self.content_type = (content_type or "").lower()

    @property
    def size(self) -> int:
        return len(self._data)

    @property
    def type(self) -> str:
        return self.content_type

    @property
    def js_object(self) -> Blob:
        return self

    async def text(self) -> str:
        return self._data.decode("utf-8")

    async def bytes(self) -> bytes:
        return self._data

    async def arrayBuffer(self) -> bytes:
        return self._data

    def slice(self, start: int = 0, end: int | None = None, content_type: str | None = None) -> Blob:
        return Blob([self._data[start:end]], content_type=content_type)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.size} bytes {self.content_type!r}>"


class File(Blob):
    """A Blob with a name (an uploaded file)."""

    def __init__(self, blob_parts: Any = None, filename: str = "blob", content_type: str | None = None,
                 last_modified: int | None = None) -> None:
        super().__init__(blob_parts, content_type)
        self.name = filename
        self.last_modified = int(time.time() * 1000) if last_modified is None else last_modified

    lastModified = property(lambda self: self.last_modified)


def _part_bytes(part: Any) -> bytes:
    if isinstance(part, Blob):
        return part._data
    if isinstance(part, str):
        return part.encode("utf-8")
    if isinstance(part, (bytes, bytearray, memoryview)):
        return bytes(part)
    raise TypeError(f"a Blob part is str, bytes or Blob, not {type(part).__name__}")


FormDataValue = "str | Blob"


def _value(value: Any, filename: str | None = None) -> str | Blob:
    """As the fetch API stores them: Blobs become Files (named), anything else a string."""
    if isinstance(value, Blob):
        if filename is not None or not isinstance(value, File):
            return File(value, filename or "blob", value.content_type)
        return value
    return str(value)


class FormData(MutableMapping[str, Any]):
    """Ordered (key, value) pairs; a key may repeat. `form[key]` is the first value, `get_all` all."""

    def __init__(self, form_data: dict[str, Any] | FormData | Iterable[tuple[str, Any]] | None = None) -> None:
        self._entries: list[tuple[str, str | Blob]] = []
        if form_data is None:
            return
        items = form_data.items() if isinstance(form_data, (dict, FormData)) else form_data
        for key, value in items:
            self.append(key, value)

    def __getitem__(self, key: str) -> str | Blob:
        for k, v in self._entries:
            if k == key:
                return v
        raise KeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, list):
            raise TypeError("Expected single item in arguments to FormData.__setitem__")
        self.set(key, value)

    def set(self, key: str, value: Any, filename: str | None = None) -> None:
        """Replace every value of `key` with one, where the first one was."""
        entry = (str(key), _value(value, filename))
        at = next((i for i, (k, _) in enumerate(self._entries) if k == key), None)
        self._entries = [e for e in self._entries if e[0] != key]
        self._entries.insert(len(self._entries) if at is None else at, entry)

    def append(self, key: str, value: Any, filename: str | None = None) -> None:
        self._entries.append((str(key), _value(value, filename)))

    def delete(self, key: str) -> None:
        self._entries = [e for e in self._entries if e[0] != key]

    __delitem__ = delete

    def __contains__(self, key: object) -> bool:
        return any(k == key for k, _ in self._entries)

    has = __contains__

    def get_all(self, key: str) -> list[str | Blob]:
        return [v for k, v in self._entries if k == key]

    getAll = get_all

    def keys(self) -> Iterator[str]:  # type: ignore[override]
        return (k for k, _ in self._entries)

    def values(self) -> Iterator[str | Blob]:  # type: ignore[override]
        return (v for _, v in self._entries)

    def items(self) -> Iterator[tuple[str, str | Blob]]:  # type: ignore[override]
        return iter(list(self._entries))

    entries = items

    def __iter__(self) -> Iterator[str]:
        return self.keys()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def js_object(self) -> FormData:
        return self

    def __repr__(self) -> str:
        return f"<FormData {self._entries!r}>"


def encode_body(body: Any) -> tuple[bytes, str | None]:
    """A FormData or Blob body as bytes, with the content type it implies (None: none implied)."""
    if isinstance(body, FormData):
        boundary = f"----durableFormBoundary{secrets.token_hex(12)}"
        encoder = multipart.MultipartEncoder(boundary.encode())
        out = [encoder.send_event(multipart.Preamble(b""))]
        for key, value in body.items():
            if isinstance(value, Blob):
                headers = Headers([("Content-Type", value.content_type or "application/octet-stream")])
                name = value.name if isinstance(value, File) else "blob"
                out.append(encoder.send_event(multipart.File(name=key, filename=name, headers=headers)))
                out.append(encoder.send_event(multipart.Data(data=value._data, more_data=False)))
            else:
                out.append(encoder.send_event(multipart.Field(name=key, headers=Headers())))
                out.append(encoder.send_event(multipart.Data(data=value.encode("utf-8"), more_data=False)))
        out.append(encoder.send_event(multipart.Epilogue(b"")))
        return b"".join(out), f"multipart/form-data; boundary={boundary}"
    if isinstance(body, Blob):
        return body._data, body.content_type or None
    raise TypeError(f"not a form or blob body: {type(body).__name__}")


def parse_form(body: bytes, content_type: str | None) -> FormData:
    """A `multipart/form-data` or `application/x-www-form-urlencoded` body as FormData."""
    mimetype, options = parse_options_header(content_type or "")
    if mimetype == "application/x-www-form-urlencoded":
        return FormData(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    if mimetype != "multipart/form-data" or not options.get("boundary"):
        raise TypeError(f"Parsing a Body as FormData requires a Content-Type header of multipart/form-data "
                        f"or application/x-www-form-urlencoded, not {content_type!r}")
    decoder = multipart.MultipartDecoder(options["boundary"].encode("latin-1"), max_parts=MAX_FORM_PARTS)
    decoder.receive_data(body)
    decoder.receive_data(None)
    form = FormData()
    current: multipart.Field | multipart.File | None = None
    chunks: list[bytes] = []
    while True:
        event = decoder.next_event()
        if isinstance(event, (multipart.NeedData, multipart.Epilogue)):
            break
        if isinstance(event, (multipart.Field, multipart.File)):
            current, chunks = event, []
        elif isinstance(event, multipart.Data) and current is not None:
            chunks.append(event.data)
            if not event.more_data:
                data = b"".join(chunks)
                if isinstance(current, multipart.File):
                    form.append(current.name, File([data], current.filename or "blob",
                                                   current.headers.get("content-type", "")))
                else:
                    form.append(current.name, data.decode("utf-8"))
                current = None
    return form
