"""KV namespaces: Cloudflare's API and limits on the local SQLite store."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from durable.kv import KVError, KVNamespace


@pytest.fixture
def kv(tmp_path: Path):
    namespace = KVNamespace.for_namespace(tmp_path, "ns-1")
    yield namespace
    namespace.close()


async def test_get_put_delete_types_and_metadata(kv: KVNamespace) -> None:
    assert await kv.get("missing") is None
    await kv.put("k", '{"a": 1}', {"metadata": {"v": 2}})
    assert await kv.get("k") == '{"a": 1}'
    assert await kv.get("k", "json") == {"a": 1} and await kv.get("k", type="arrayBuffer") == b'{"a": 1}'
    found = await kv.getWithMetadata("k", {"type": "json"})
    assert found.value == {"a": 1} and found["metadata"] == {"v": 2}
    await kv.delete("k")
    assert await kv.get("k") is None and (await kv.get_with_metadata("k")).value is None


async def test_expiry_and_the_limits_cloudflare_sets(kv: KVNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    await kv.put("short", "x", expirationTtl=60)
    assert await kv.get("short") == "x"
    listed = await kv.list()
    assert listed["keys"][0]["name"] == "short" and listed["keys"][0]["expiration"] >= time.time() + 59
    later = time.time() + 61
    monkeypatch.setattr("durable.kv.time.time", lambda: later)
    assert await kv.get("short") is None and (await kv.list())["keys"] == []
    for bad in ({"expirationTtl": 30}, {"metadata": {"x": "y" * 2000}}):
        with pytest.raises(KVError):
            await kv.put("k", "v", bad)
    with pytest.raises(KVError):
        await kv.put("k" * 513, "v")
    with pytest.raises(KVError):
        await kv.put("k", {"not": "a string"})


async def test_list_pages_by_prefix_with_a_cursor(kv: KVNamespace) -> None:
    for i in range(25):
        await kv.put(f"user:{i:02d}", str(i))
    await kv.put("other", "x")
    first = await kv.list(prefix="user:", limit=10)
    assert [k["name"] for k in first["keys"]] == [f"user:{i:02d}" for i in range(10)]
    assert first["list_complete"] is False
    names = [k["name"] for k in first["keys"]]
    cursor = first["cursor"]
    while cursor:
        page = await kv.list({"prefix": "user:", "limit": 10, "cursor": cursor})
        names += [k["name"] for k in page["keys"]]
        cursor = page.get("cursor")
    assert names == [f"user:{i:02d}" for i in range(25)]
    with pytest.raises(KVError):
        await kv.list(cursor="%%%not-base64")
