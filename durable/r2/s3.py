"""An R2 bucket kept in any S3-compatible store (R2 itself, S3, MinIO) through aiobotocore, for
buckets whose config names one (`s3_bucket`, `s3_endpoint_url`). Credentials come from the usual
chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, an instance role).

Layout under the bucket (and `s3_prefix`): `r/<key>` each key's record (JSON), swapped by the
store's conditional writes (If-Match on the record's ETag, If-None-Match: * to create); `b/<id>`
blobs (a multipart upload of 5 MiB parts once a value passes that: never whole in memory);
`u/<id>` uploads in progress, `p/<id>/<n>` their parts, `e/<id>` their ends, `t/<id>` retired blobs. A delete is
conditional only on the record just read (S3 has no conditional delete everywhere).
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from .store import CHUNK, BlobGone, Part, Record, Upload

PART = 5 * 1024 * 1024  # S3's smallest part: what a value holds in memory on its way


class S3Store:
    def __init__(self, bucket: str, *, endpoint_url: str | None = None, region: str = "auto", prefix: str = "") -> None:
        self.bucket, self.endpoint_url, self.region, self.prefix = bucket, endpoint_url, region, prefix
        self._client: Any = None
        self._context: Any = None
        self._etags: dict[tuple[str, str], str] = {}  # (key, version) → its record's ETag, for the swap after a read

    async def _s3(self) -> Any:
        if self._client is None:
            from aiobotocore.session import (
                get_session,  # only buckets kept in S3 need it
            )
            self._context = get_session().create_client("s3", endpoint_url=self.endpoint_url,
                                                         region_name=None if self.region == "auto" else self.region)
            self._client = await self._context.__aenter__()
        return self._client

    def _name(self, kind: str, key: str) -> str:
        return f"{self.prefix}{kind}/{key}"

    @staticmethod
    def _missing(exc: Exception) -> bool:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        return code in ("NoSuchKey", "404", "NotFound")

    @staticmethod
    def _refused(exc: Exception) -> bool:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        return code in ("PreconditionFailed", "412", "ConditionalRequestConflict")

    async def _json(self, name: str) -> tuple[dict[str, Any], str] | None:
        s3 = await self._s3()
        try:
            reply = await s3.get_object(Bucket=self.bucket, Key=name)
        except Exception as exc:
            if self._missing(exc):
                return None
            raise
        async with reply["Body"] as body:
            return json.loads(await body.read()), reply["ETag"]

    async def _put_json(self, name: str, doc: dict[str, Any], **condition: str) -> None:
        s3 = await self._s3()
        await s3.put_object(Bucket=self.bucket, Key=name, Body=json.dumps(doc).encode(),
                            ContentType="application/json", **condition)

    async def _delete(self, name: str) -> None:
        await (await self._s3()).delete_object(Bucket=self.bucket, Key=name)

    async def head(self, key: str) -> Record | None:
        found = await self._json(self._name("r", key))
        if found is None:
            return None
        doc, etag = found
        record = Record.from_doc(doc)
        self._etags[(key, record.version)] = etag
        return record

    async def swap(self, key: str, expected_version: str | None, new: Record | None) -> bool:
        name = self._name("r", key)
        etag = None
        if expected_version is not None:
            etag = self._etags.pop((key, expected_version), None)
            if etag is None:  # not read through this store: read it now
                current = await self.head(key)
                if current is None or current.version != expected_version:
                    return False
                etag = self._etags.pop((key, expected_version))
        if new is None:
            if etag is None:
                return await self.head(key) is None
            current = await self.head(key)
            if current is None or current.version != expected_version:
                return False
            await self._delete(name)
            return True
        try:
            await self._put_json(name, new.to_doc(), **({"IfMatch": etag} if etag else {"IfNoneMatch": "*"}))
        except Exception as exc:
            if self._refused(exc) or self._missing(exc):
                return False
            raise
        return True

    async def list(self, prefix: str, after: str, limit: int) -> list[Record]:
        s3 = await self._s3()
        options: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._name("r", prefix), "MaxKeys": limit}
        if after:
            options["StartAfter"] = self._name("r", after)
        reply = await s3.list_objects_v2(**options)
        records = []
        for item in reply.get("Contents", []):
            found = await self._json(item["Key"])
            if found is not None:  # (deleted since it was listed)
                records.append(Record.from_doc(found[0]))
        return records

    async def write_blob(self, blob: str, chunks: AsyncIterator[bytes]) -> int:
        s3 = await self._s3()
        name = self._name("b", blob)
        buffer, size, upload_id, parts = bytearray(), 0, None, []
        try:
            async for chunk in chunks:
                buffer += chunk
                size += len(chunk)
                if len(buffer) >= PART:
                    if upload_id is None:
                        upload_id = (await s3.create_multipart_upload(Bucket=self.bucket, Key=name))["UploadId"]
                    with memoryview(buffer) as view:
                        body = bytes(view[:PART])  # one copy, not two
                    del buffer[:PART]
                    sent = await s3.upload_part(Bucket=self.bucket, Key=name, UploadId=upload_id,
                                                PartNumber=len(parts) + 1, Body=body)
                    del body
                    parts.append({"PartNumber": len(parts) + 1, "ETag": sent["ETag"]})
            if upload_id is None:
                await s3.put_object(Bucket=self.bucket, Key=name, Body=bytes(buffer))
                return size
            if buffer:
                sent = await s3.upload_part(Bucket=self.bucket, Key=name, UploadId=upload_id,
                                            PartNumber=len(parts) + 1, Body=bytes(buffer))
                parts.append({"PartNumber": len(parts) + 1, "ETag": sent["ETag"]})
            await s3.complete_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id,
                                               MultipartUpload={"Parts": parts})
        except BaseException:
            if upload_id is not None:
                await s3.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
            raise
        return size

    async def read_blob(self, blob: str, offset: int, length: int) -> AsyncIterator[bytes]:
        s3 = await self._s3()
        options: dict[str, Any] = {"Bucket": self.bucket, "Key": self._name("b", blob)}
        if length <= 0:  # nothing to read, but the blob must be there
            try:
                await s3.head_object(**options)
            except Exception as exc:
                if self._missing(exc):
                    raise BlobGone(blob) from None
                raise
            return
        try:
            reply = await s3.get_object(**options, Range=f"bytes={offset}-{offset + length - 1}")
        except Exception as exc:
            if self._missing(exc):
                raise BlobGone(blob) from None
            raise
        async with reply["Body"] as body:
            while chunk := await body.read(CHUNK):
                yield chunk

    async def delete_blob(self, blob: str) -> None:
        await self._delete(self._name("b", blob))

    async def retire(self, blob: str, due_ms: int) -> None:
        await self._put_json(self._name("t", blob), {"due_ms": due_ms})

    async def sweep(self, now_ms: int) -> list[str]:
        s3 = await self._s3()
        reply = await s3.list_objects_v2(Bucket=self.bucket, Prefix=self._name("t", ""), MaxKeys=100)
        due = []
        for item in reply.get("Contents", []):
            found = await self._json(item["Key"])
            if found is not None and found[0]["due_ms"] <= now_ms:
                await self._delete(item["Key"])
                due.append(item["Key"].rsplit("/", 1)[1])
        return due

    async def create_upload(self, upload: Upload) -> None:
        await self._put_json(self._name("u", upload.upload_id), upload.__dict__, IfNoneMatch="*")

    async def get_upload(self, upload_id: str) -> Upload | None:
        found = await self._json(self._name("u", upload_id))
        return Upload(**found[0]) if found else None

    async def put_part(self, upload_id: str, part: Part) -> Part | None:
        name = self._name("p", f"{upload_id}/{part.number:05d}")
        before = await self._json(name)
        await self._put_json(name, part.__dict__)
        return Part(**before[0]) if before else None

    async def parts(self, upload_id: str) -> list[Part]:
        s3 = await self._s3()
        reply = await s3.list_objects_v2(Bucket=self.bucket, Prefix=self._name("p", f"{upload_id}/"))
        found = [await self._json(item["Key"]) for item in reply.get("Contents", [])]
        return [Part(**doc) for doc, _ in filter(None, found)]

    async def end_upload(self, upload_id: str) -> bool:
        """The first to claim the upload's end (a create-only write) ends it: a complete racing an
        abort or another complete loses."""
        if await self._json(self._name("u", upload_id)) is None:
            return False
        try:
            await self._put_json(self._name("e", upload_id), {}, IfNoneMatch="*")
        except Exception as exc:
            if self._refused(exc):
                return False
            raise
        await self._delete(self._name("u", upload_id))
        s3 = await self._s3()
        reply = await s3.list_objects_v2(Bucket=self.bucket, Prefix=self._name("p", f"{upload_id}/"))
        for item in reply.get("Contents", []):
            await self._delete(item["Key"])
        return True

    async def close(self) -> None:
        if self._context is not None:
            await self._context.__aexit__(None, None, None)
            self._client = self._context = None
