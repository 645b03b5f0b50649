"""FormData, Blob and File as Cloudflare's Python Workers SDK defines them, and their wire form."""
from __future__ import annotations

import pytest

from durable.compat.forms import Blob, File, FormData, encode_body, parse_form
from durable.http import Request, Response


def test_form_data_keeps_order_repeats_and_coerces_values() -> None:
    form = FormData({"key": "first"})
    form.append("n", 123)
    form.append("key", "second")
    assert form["key"] == "first" and form.get_all("key") == ["first", "second"] and form["n"] == "123"
    assert list(form.keys()) == ["key", "n", "key"] and len(form) == 3 and "n" in form and "x" not in form
    form["key"] = "only"  # set: replaces every value, where the first was
    assert list(form.items()) == [("key", "only"), ("n", "123")]
    del form["n"]
    assert list(form.items()) == [("key", "only")]
    with pytest.raises(TypeError):
        form["key"] = ["a", "b"]
    with pytest.raises(KeyError):
        form["missing"]


async def test_blobs_and_files() -> None:
    typed = Blob(["te", b"s", memoryview(b"t")], content_type="Application/JSON")
    assert typed.size == 4 and typed.content_type == "application/json" and await typed.bytes() == b"test"
    assert await typed.slice(1, 3).text() == "es"
    assert Blob(typed).content_type == "application/json" and Blob([typed]).content_type == ""
    assert Blob(typed, content_type="other/type").content_type == "other/type"
    upload = File("my file", filename="test.txt", content_type="text/plain")
    assert upload.name == "test.txt" and await upload.text() == "my file" and upload.lastModified > 0
    form = FormData()
    form["plain"] = Blob(["x"])
    assert isinstance(form["plain"], File) and form["plain"].name == "blob"  # as the fetch API stores it
    with pytest.raises(TypeError):
        Blob([1, 2])


async def test_a_form_survives_its_multipart_body_and_a_response_or_request_carries_it() -> None:
    form = FormData({"field": "välue"})
    form.append("data", Blob([b"\x00\x01binary"], content_type="application/octet-stream"), filename="d.bin")
    body, content_type = encode_body(form)
    back = parse_form(body, content_type)
    assert back["field"] == "välue" and back["data"].name == "d.bin" and await back["data"].bytes() == b"\x00\x01binary"
    response = Response(form)
    assert response.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert (await response.formData())["field"] == "välue"
    request = Request("http://x/", method="POST", body=Blob(["a,b"], content_type="text/csv"))
    assert request.headers["content-type"] == "text/csv" and await (await request.blob()).text() == "a,b"
    with pytest.raises(TypeError, match="multipart/form-data"):
        await request.form_data()
