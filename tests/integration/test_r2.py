"""R2 buckets: Cloudflare's Workers API (conditionals, ranges, list pages, multipart, streaming)
against each store that runs here: files on this host's disk, and MongoDB GridFS."""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import socket
import subprocess
import sys
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pymongo import AsyncMongoClient

from durable import config as wconfig
from durable.cluster.node import ClusterSettings
from durable.r2 import R2Bucket, R2Error, R2ObjectBody
from durable.r2.arguments import MIN_PART_BYTES
from durable.r2.files import FileStore
from durable.r2.gridfs import GridFSStore
from durable.r2.s3 import S3Store
from durable.runtime import Runtime
from durable.server import Server, bind, url_of
from tests.net import free_port
from tests.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A local S3 server (moto's, speaking S3's REST protocol, in a process of its own so this
    one's memory is this one's) with credentials for it."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    patch = pytest.MonkeyPatch()
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        patch.setenv(name, value)
    try:
        assert wait_until(lambda: server.poll() is not None or _listening(port), 30) and server.poll() is None, \
            "the S3 server did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        patch.undo()
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
async def make_bucket(tmp_path: Path, mongo_uri: str, s3_endpoint: str) -> AsyncIterator[Any]:
    """Factory: an empty bucket on the store named (files, gridfs, s3), removed at the end."""
    cleanups: list[Any] = []

    async def make(kind: str) -> R2Bucket:
        if kind == "files":
            store: Any = FileStore(tmp_path / "r2" / f"photos-{len(cleanups)}")
            cleanups.append(store.close)
        elif kind == "gridfs":
            client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri)
            name = f"t_{uuid.uuid4().hex[:12]}"
            store = GridFSStore(client[name], "photos")

            async def drop(client: Any = client, name: str = name) -> None:
                await client.drop_database(name)
                await client.close()
            cleanups.append(drop)
        else:
            name = f"t-{uuid.uuid4().hex[:12]}"
            store = S3Store(name, endpoint_url=s3_endpoint, region="us-east-1", prefix="shop/")
            await (await store._s3()).create_bucket(Bucket=name)
            cleanups.append(store.close)
        return R2Bucket("photos", store)

    yield make
    for cleanup in reversed(cleanups):
        await cleanup()


@pytest.fixture(params=["files", "gridfs", "s3"])
async def bucket(request: pytest.FixtureRequest, make_bucket: Any) -> R2Bucket:
    return await make_bucket(request.param)


async def body_of(found: Any) -> bytes:
    assert isinstance(found, R2ObjectBody), found
    return await found.bytes()


async def test_put_get_head_delete_with_metadata(bucket: R2Bucket) -> None:
    assert await bucket.get("a.txt") is None and await bucket.head("a.txt") is None
    put = await bucket.put("a.txt", "hello", {"httpMetadata": {"contentType": "text/plain", "cacheControl": "max-age=60"},
                                              "customMetadata": {"owner": "ann"}})
    assert put is not None and put.etag == hashlib.md5(b"hello").hexdigest() and put.httpEtag == f'"{put.etag}"'
    assert put.size == 5 and put.checksums["md5"] == put.etag
    assert abs((put.uploaded - dt.datetime.now(dt.UTC)).total_seconds()) < 5
    got = await bucket.get("a.txt")
    assert await body_of(got) == b"hello" and got.customMetadata == {"owner": "ann"}
    headers: dict[str, str] = {}
    got.writeHttpMetadata(headers)
    assert headers == {"content-type": "text/plain", "cache-control": "max-age=60"}
    assert (await bucket.head("a.txt")).version == put.version
    again = await bucket.put("a.txt", b"second", http_metadata={"contentType": "text/x"})
    assert again.version != put.version and await (await bucket.get("a.txt")).text() == "second"
    await bucket.delete("a.txt")
    await bucket.delete(["a.txt", "never-there"])
    assert await bucket.get("a.txt") is None
    with pytest.raises(R2Error, match="10020"):
        await bucket.put("k" * 1025, b"x")
    with pytest.raises(R2Error, match="10020"):
        await bucket.get("é" * 513)  # 1,026 bytes
    assert await bucket.put("", b"the empty key is a key") is not None


async def test_conditional_reads_and_writes(bucket: R2Bucket) -> None:
    first = await bucket.put("doc", b"v1")
    etag = first.etag
    assert await body_of(await bucket.get("doc", onlyIf={"etagMatches": etag})) == b"v1"
    refused = await bucket.get("doc", {"onlyIf": {"etagDoesNotMatch": etag}})
    assert refused is not None and not isinstance(refused, R2ObjectBody) and refused.etag == etag
    assert not isinstance(await bucket.get("doc", onlyIf={"etagMatches": "nope"}), R2ObjectBody)
    with pytest.raises(TypeError, match="quotes"):
        await bucket.get("doc", onlyIf={"etagMatches": f'"{etag}"'})
    # If-Match compares strongly: a weak etag never matches
    assert not isinstance(await bucket.get("doc", onlyIf={"If-Match": f'W/"{etag}"'}), R2ObjectBody)
    assert isinstance(await bucket.get("doc", onlyIf={"If-Match": f'"x", "{etag}"'}), R2ObjectBody)
    assert isinstance(await bucket.get("doc", onlyIf={"etagMatches": "*"}), R2ObjectBody)
    later = first.uploaded + dt.timedelta(seconds=5)
    assert isinstance(await bucket.get("doc", onlyIf={"uploadedBefore": later}), R2ObjectBody)
    assert not isinstance(await bucket.get("doc", onlyIf={"uploadedAfter": later}), R2ObjectBody)
    # a matching etag overrules uploadedBefore, as HTTP's If-Match overrules If-Unmodified-Since
    earlier = first.uploaded - dt.timedelta(seconds=5)
    assert isinstance(await bucket.get("doc", onlyIf={"etagMatches": etag, "uploadedBefore": earlier}), R2ObjectBody)
    # Headers form (a request's), as Workers pass request.headers
    assert not isinstance(await bucket.get("doc", onlyIf={"If-None-Match": f'W/"{etag}"'}), R2ObjectBody)
    assert isinstance(await bucket.get("doc", onlyIf={"If-None-Match": '"other"'}), R2ObjectBody)
    # conditional writes: nothing is written when the condition fails
    assert await bucket.put("doc", b"v2", onlyIf={"etagMatches": "stale"}) is None
    assert await body_of(await bucket.get("doc")) == b"v1"
    assert await bucket.put("doc", b"v2", onlyIf={"etagMatches": etag}) is not None
    assert await bucket.put("fresh", b"x", onlyIf={"etagDoesNotMatch": "*"}) is not None
    assert await bucket.put("fresh", b"y", onlyIf={"etagDoesNotMatch": "*"}) is None
    assert await body_of(await bucket.get("fresh")) == b"x"


@pytest.mark.parametrize("kind", ["files", "gridfs"])  # (S3 and R2 decide conditional writes atomically;
async def test_create_if_absent_is_atomic_under_concurrent_writers(make_bucket: Any, kind: str) -> None:
    bucket = await make_bucket(kind)  # the local S3 server checks, then writes: a race it cannot stand for)
    results = await asyncio.gather(*(bucket.put("once", f"writer {i}", onlyIf={"etagDoesNotMatch": "*"})
                                     for i in range(12)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert (await bucket.head("once")).etag == winners[0].etag


async def test_range_reads(bucket: R2Bucket) -> None:
    await bucket.put("digits", b"0123456789")
    part = await bucket.get("digits", range={"offset": 2, "length": 3})
    assert await body_of(part) == b"234" and part.range == {"offset": 2, "length": 3} and part.size == 10
    assert await body_of(await bucket.get("digits", range={"offset": 7})) == b"789"
    assert await body_of(await bucket.get("digits", range={"length": 2})) == b"01"
    assert await body_of(await bucket.get("digits", range={"suffix": 4})) == b"6789"
    assert await body_of(await bucket.get("digits", range={"Range": "bytes=1-2"})) == b"12"
    assert await body_of(await bucket.get("digits", range={"Range": "bytes=-3"})) == b"789"
    assert await body_of(await bucket.get("digits", range={"offset": 8, "length": 100})) == b"89"
    assert (await bucket.get("digits")).range == {"offset": 0, "length": 10}
    for bad in ({"offset": 11}, {"offset": -1}, {"length": 0}, {"suffix": 0}):
        with pytest.raises(R2Error, match="10039"):
            await bucket.get("digits", range=bad)
    for unusable in ({"Range": "bytes=0-1,4-5"}, {"Range": "items=0-1"}, {"Range": "bytes=20-"}):
        whole = await bucket.get("digits", range=unusable)  # a Range header R2 cannot serve: the whole object
        assert await body_of(whole) == b"0123456789" and whole.range == {"offset": 0, "length": 10}


async def test_list_pages_prefixes_and_includes(bucket: R2Bucket) -> None:
    for i in range(7):
        await bucket.put(f"img/{i:02d}.png", b"x", customMetadata={"n": str(i)})
    for name in ("img/thumbs/a", "img/thumbs/b", "img/variants/c", "other"):
        await bucket.put(name, b"y")
    first = await bucket.list({"prefix": "img/", "limit": 3})
    assert [o.key for o in first.objects] == ["img/00.png", "img/01.png", "img/02.png"] and first.truncated
    assert first.objects[0].customMetadata is None  # left out unless included
    keys = [o.key for o in first.objects]
    cursor = first.cursor
    while cursor:
        page = await bucket.list(prefix="img/", limit=3, cursor=cursor)
        keys += [o.key for o in page.objects]
        cursor = page.get("cursor")
    assert keys == [f"img/{i:02d}.png" for i in range(7)] + ["img/thumbs/a", "img/thumbs/b", "img/variants/c"]
    folded = await bucket.list(prefix="img/", delimiter="/", include=["customMetadata"])
    assert folded.delimitedPrefixes == ["img/thumbs/", "img/variants/"] and not folded.truncated
    assert len(folded.objects) == 7 and folded.objects[3].customMetadata == {"n": "3"}
    after = await bucket.list(startAfter="img/thumbs/b")
    assert [o.key for o in after.objects] == ["img/variants/c", "other"]
    with pytest.raises(R2Error, match="10022"):
        await bucket.list(limit=1001)
    with pytest.raises(TypeError, match="httpMetadata"):
        first.objects[0].writeHttpMetadata({})


async def test_multipart_upload_joins_parts_in_order(bucket: R2Bucket) -> None:
    upload = await bucket.createMultipartUpload("big.bin", {"httpMetadata": {"contentType": "application/x-big"}})
    first, second, last = b"a" * MIN_PART_BYTES, b"b" * MIN_PART_BYTES, b"tail"
    parts = await asyncio.gather(upload.uploadPart(3, last), upload.uploadPart(1, first), upload.uploadPart(2, second))
    done = await upload.complete(sorted(parts, key=lambda p: p["partNumber"]))
    digests = b"".join(hashlib.md5(p).digest() for p in (first, second, last))
    assert done.etag == hashlib.md5(digests).hexdigest() + "-3" and done.size == 2 * MIN_PART_BYTES + 4
    got = await bucket.get("big.bin", range={"suffix": 6})
    assert await body_of(got) == b"bbtail" and got.httpMetadata == {"contentType": "application/x-big"}
    with pytest.raises(R2Error, match="10024"):  # completed: it is gone
        await upload.uploadPart(4, b"more")


async def test_multipart_refusals_and_abort(bucket: R2Bucket) -> None:
    upload = await bucket.create_multipart_upload("small.bin")
    one = await upload.upload_part(1, b"too small")
    two = await upload.upload_part(2, b"last")
    with pytest.raises(R2Error, match="10011"):
        await upload.complete([one, two])
    with pytest.raises(R2Error, match="10001"):  # a part named twice
        await upload.complete([two, two])
    with pytest.raises(R2Error, match="10025"):
        await upload.complete([{"partNumber": 1, "etag": "wrong"}])
    resumed = bucket.resumeMultipartUpload("small.bin", upload.uploadId)
    assert (await resumed.complete([two]))["size"] == 4  # a single part may be any size
    aborted = await bucket.createMultipartUpload("gone.bin")
    await aborted.uploadPart(1, b"x")
    await aborted.abort()
    with pytest.raises(R2Error, match="10024"):
        await aborted.complete([{"partNumber": 1, "etag": hashlib.md5(b"x").hexdigest()}])
    assert await bucket.head("gone.bin") is None
    with pytest.raises(R2Error, match="10024"):
        await bucket.resumeMultipartUpload("other-key", upload.uploadId).uploadPart(1, b"x")


async def test_checksums_are_checked(bucket: R2Bucket) -> None:
    assert await bucket.put("k", b"data", md5=hashlib.md5(b"data").hexdigest()) is not None
    sha = await bucket.put("s", b"data", sha256=hashlib.sha256(b"data").digest())
    assert sha.checksums["sha256"] == hashlib.sha256(b"data").hexdigest()
    with pytest.raises(R2Error, match="10037"):
        await bucket.put("k", b"other", md5=hashlib.md5(b"data").hexdigest())
    assert await body_of(await bucket.get("k")) == b"data"


async def test_a_50_mb_value_streams_through_without_sitting_in_memory(bucket: R2Bucket) -> None:
    size, block = 50 * 1024 * 1024, bytes(range(256)) * 256  # 64 KiB

    async def produce() -> AsyncIterator[bytes]:
        for _ in range(size // len(block)):
            yield block

    tracemalloc.start()
    try:
        put = await bucket.put("video.bin", produce())
        got = await bucket.get("video.bin")
        digest, total = hashlib.md5(), 0
        assert isinstance(got, R2ObjectBody)
        async for chunk in got.body:
            digest.update(chunk)
            total += len(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert put.size == total == size and digest.hexdigest() == put.etag
    assert peak < 12 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"


async def test_a_read_under_way_finishes_when_the_key_is_overwritten(bucket: R2Bucket) -> None:
    old = bytes(range(256)) * (9 * 4096)  # 9 MiB: more than one GridFS segment, more than one S3 read
    await bucket.put("photo", old)
    reading = await bucket.get("photo")
    assert isinstance(reading, R2ObjectBody)
    chunks = reading.body
    first = await anext(chunks)
    await bucket.put("photo", b"new")  # the old bytes are retired, not removed under the reader
    rest = b"".join([chunk async for chunk in chunks])
    assert first + rest == old
    assert await body_of(await bucket.get("photo")) == b"new"


async def test_a_cluster_node_reads_what_another_node_wrote(tmp_path: Path, mongo_uri: str) -> None:
    """Two nodes with state directories of their own (so a local-disk shortcut fails): a value
    written through one node's worker is read through the other's."""
    database = f"t_{uuid.uuid4().hex[:12]}"
    config = wconfig.load(ROOT / "tests" / "fixtures" / "workers" / "cf_r2" / "wrangler.jsonc")
    nodes = []
    try:
        for name in ("a", "b"):
            sock = bind("127.0.0.1", 0)
            runtime = Runtime([config], persist_to=tmp_path / f"node-{name}", use_registry=False,
                              cluster=ClusterSettings(uri=mongo_uri, database=database, node_id=name, lease_s=3.0,
                                                      urls={"cf-r2": url_of(sock)}))
            await runtime.start()
            server = Server(runtime.workers["cf-r2"], sock)
            await server.start()
            nodes.append((runtime, server))
        async with aiohttp.ClientSession() as http:
            async with http.put(f"{nodes[0][1].url}/cat.txt", data="meow") as resp:
                assert resp.status == 201
                etag = await resp.text()
            async with http.get(f"{nodes[1][1].url}/cat.txt") as resp:
                assert (resp.status, await resp.text(), resp.headers["etag"]) == (200, "meow", f'"{etag}"')
        assert not list((tmp_path / "node-b").rglob("*cf-r2-photos*"))  # nothing of it on node b's disk
    finally:
        for runtime, server in reversed(nodes):
            await server.stop()
            await runtime.close()
        client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri)
        await client.drop_database(database)
        await client.close()


async def test_a_bucket_whose_config_names_an_s3_store_is_kept_there(tmp_path: Path, s3_endpoint: str) -> None:
    name = f"t-{uuid.uuid4().hex[:12]}"
    config = wconfig.load(ROOT / "tests" / "fixtures" / "workers" / "cf_r2" / "wrangler.jsonc")
    binding = config.r2_buckets[0].model_copy(update={"s3_bucket": name, "s3_endpoint_url": s3_endpoint,
                                                      "s3_region": "us-east-1"})
    runtime = Runtime([config.model_copy(update={"r2_buckets": [binding]})], persist_to=tmp_path / "state",
                      use_registry=False)
    await runtime.start()
    sock = bind("127.0.0.1", 0)
    server = Server(runtime.workers["cf-r2"], sock)
    await server.start()
    try:
        bucket = runtime.workers["cf-r2"].env.PHOTOS
        assert isinstance(bucket.store, S3Store)
        await (await bucket.store._s3()).create_bucket(Bucket=name)
        async with aiohttp.ClientSession() as http:
            async with http.put(f"{server.url}/dog.txt", data="woof") as resp:
                assert resp.status == 201
        listed = await (await bucket.store._s3()).list_objects_v2(Bucket=name)
        assert "r/dog.txt" in [item["Key"] for item in listed["Contents"]]
        assert not (tmp_path / "state" / "v3" / "r2").exists()
    finally:
        await server.stop()
        await runtime.close()


async def test_a_multipart_upload_completed_twice_at_once_lands_once(bucket: R2Bucket) -> None:
    upload = await bucket.createMultipartUpload("twice.bin")
    part = await upload.uploadPart(1, b"only part")
    results = await asyncio.gather(upload.complete([part]), upload.complete([part]), upload.abort(),
                                   return_exceptions=True)
    landed = [r for r in results[:2] if not isinstance(r, BaseException)]
    refused = [r for r in results[:2] if isinstance(r, R2Error)]
    assert len(landed) + len(refused) == 2 and len(landed) <= 1 and all("10024" in str(r) for r in refused)
    found = await bucket.get("twice.bin")
    assert (found is not None) == bool(landed)
    if landed:
        assert await body_of(found) == b"only part"
    with pytest.raises(R2Error, match="10024"):
        await upload.uploadPart(2, b"late")
