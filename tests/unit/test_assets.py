"""Which file (or redirect) a path names under each of Cloudflare's html_handling and
not_found_handling modes, and what never escapes the folder."""
from __future__ import annotations

from pathlib import Path

import pytest

from durable.assets import Assets, AssetsBinding, Found, content_type


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for name in ("index.html", "about.html", "docs/index.html", "docs/404.html", "app.js", "logo.svg"):
        (tmp_path / "site" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "site" / name).write_text(name)
    (tmp_path / "secret.txt").write_text("outside")
    return tmp_path / "site"


@pytest.mark.parametrize(("path", "expected"), [
    ("/", "index.html"), ("/about", "about.html"), ("/docs/", "docs/index.html"), ("/app.js", "app.js"),
    ("/index.html", "→/"), ("/about.html", "→/about"), ("/about/", "→/about"), ("/docs", "→/docs/"),
    ("/docs/index", "→/docs/"), ("/missing", None), ("/../secret.txt", None), ("/%2e%2e/secret.txt", None),
])
def test_auto_trailing_slash(folder: Path, path: str, expected: str | None) -> None:
    found = Assets(folder).match(path)
    if expected is None:
        assert found is None
    elif expected.startswith("→"):
        assert found == Found(redirect=expected[1:])
    else:
        assert found is not None and found.file == folder / expected


@pytest.mark.parametrize(("mode", "path", "expected"), [
    ("force-trailing-slash", "/about", "→/about/"), ("force-trailing-slash", "/about/", "about.html"),
    ("force-trailing-slash", "/docs", "→/docs/"), ("force-trailing-slash", "/about.html", "→/about/"),
    ("drop-trailing-slash", "/about/", "→/about"), ("drop-trailing-slash", "/docs", "docs/index.html"),
    ("drop-trailing-slash", "/docs/", "→/docs"), ("drop-trailing-slash", "/docs/index.html", "→/docs"),
    ("drop-trailing-slash", "/", "index.html"), ("force-trailing-slash", "/app.js", "app.js"),
])
def test_forced_and_dropped_trailing_slashes(folder: Path, mode: str, path: str, expected: str) -> None:
    found = Assets(folder, html_handling=mode).match(path)
    if expected.startswith("→"):
        assert found == Found(redirect=expected[1:])
    else:
        assert found is not None and found.file == folder / expected


def test_none_serves_exact_files_only(folder: Path) -> None:
    assets = Assets(folder, html_handling="none")
    assert assets.match("/about") is None and assets.match("/about.html").file == folder / "about.html"


def test_not_found_handling(folder: Path) -> None:
    assert Assets(folder, not_found_handling="single-page-application").miss("/any/route") == Found(folder / "index.html")
    assert Assets(folder, not_found_handling="404-page").miss("/docs/deep/x") == Found(folder / "docs/404.html", status=404)
    assert Assets(folder, not_found_handling="404-page").miss("/x") is None  # no 404.html at or above it
    assert Assets(folder).miss("/x") is None


def test_run_worker_first_patterns(folder: Path) -> None:
    assets = Assets(folder, run_worker_first=["/api/*", "!/api/docs/*"])
    assert assets.worker_first("/api/x") and not assets.worker_first("/api/docs/x") and not assets.worker_first("/")
    assert Assets(folder, run_worker_first=True).worker_first("/")


def test_cloudflare_s_content_types() -> None:
    assert [content_type(Path(n)) for n in ("a.html", "a.css", "a.js", "a.svg", "a.ico", "a.bin")] == [
        "text/html; charset=utf-8", "text/css; charset=utf-8", "text/javascript; charset=utf-8", "image/svg+xml",
        "image/vnd.microsoft.icon", "application/octet-stream"]


async def test_the_binding_answers_etags_head_and_methods(folder: Path) -> None:
    binding = AssetsBinding(Assets(folder))
    first = await binding.fetch("http://x/app.js")
    assert first.status == 200 and first.body == b"app.js" and first.headers["etag"].startswith('"')
    again = await binding.fetch("http://x/app.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status == 304 and again.body == b""
    head = await binding.fetch("http://x/app.js", method="HEAD")
    assert head.body == b"" and head.headers["content-length"] == "6"
    assert (await binding.fetch("http://x/app.js", method="POST")).status == 405
    assert (await binding.fetch("http://x/nothing")).status == 404


def test_no_spelling_of_a_path_reaches_a_file_past_the_worker(folder: Path) -> None:
    (folder / "admin").mkdir()
    (folder / "admin" / "secret.html").write_text("secret")
    assets = Assets(folder, run_worker_first=["/admin/*"])
    for path in ("/admin/secret", "//admin/secret", "/admin//secret"):
        assert assets.worker_first(path), path  # the worker decides, whatever the slashes
    assert assets.match("/%61dmin/secret") is None  # decoded once by the server: no second decoding here


async def test_redirects_are_encoded_and_stay_on_this_site(folder: Path) -> None:
    (folder / "caf\u00e9.html").write_text("menu")
    binding = AssetsBinding(Assets(folder))
    assert (await binding.fetch("http://x/caf%C3%A9.html")).headers["location"] == "/caf%C3%A9"
    assert (await binding.fetch("http://x//docs")).headers["location"] == "/docs/"
    etag = (await binding.fetch("http://x/app.js")).headers["etag"]
    assert (await binding.fetch("http://x/app.js", headers={"If-None-Match": "*"})).status == 304 and etag
