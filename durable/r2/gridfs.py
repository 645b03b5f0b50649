"""An R2 bucket in MongoDB, so every node of a cluster reads what any node wrote: blobs in GridFS
(pymongo's own, `<prefix>.files`/`.chunks`), records one document per key in `<prefix>.objects`,
swapped by compare-and-set on the version; multipart uploads and their parts beside them.

A blob is a run of GridFS files of `SEGMENT` bytes each (`<blob>/00000`, `<blob>/00001`…, all
named `<blob>`): pymongo's upload stream holds up to 48 MB before it writes, and a 50 MB value
must never sit whole in memory."""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from gridfs import AsyncGridFSBucket
from gridfs.errors import CorruptGridFile, NoFile
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from .store import CHUNK, BlobGone, Part, Record, Upload

SEGMENT = 16 * CHUNK  # 4 MiB: what one upload stream may hold before it is written


class GridFSStore:
    def __init__(self, db: AsyncDatabase[Any], bucket_name: str) -> None:
        prefix = f"r2.{bucket_name}"
        self.gridfs = AsyncGridFSBucket(db, bucket_name=prefix, chunk_size_bytes=CHUNK)
        self.files = db[f"{prefix}.files"]
        self.objects = db[f"{prefix}.objects"]
        self.uploads = db[f"{prefix}.uploads"]
        self.parts_of = db[f"{prefix}.parts"]
        self.retired = db[f"{prefix}.retired"]
        self._indexed = False

    async def _index(self) -> None:
        if not self._indexed:  # the parts of one upload, in order
            await self.parts_of.create_index([("upload_id", 1), ("number", 1)], unique=True)
            self._indexed = True

    async def head(self, key: str) -> Record | None:
        doc = await self.objects.find_one({"_id": key})
        return Record.from_doc(doc) if doc else None

    async def swap(self, key: str, expected_version: str | None, new: Record | None) -> bool:
        if expected_version is None:
            if new is None:
                return await self.objects.count_documents({"_id": key}, limit=1) == 0
            try:
                await self.objects.insert_one({"_id": key, **new.to_doc()})
            except DuplicateKeyError:
                return False
            return True
        if new is None:
            return (await self.objects.delete_one({"_id": key, "version": expected_version})).deleted_count == 1
        done = await self.objects.replace_one({"_id": key, "version": expected_version}, {"_id": key, **new.to_doc()})
        return done.matched_count == 1

    async def list(self, prefix: str, after: str, limit: int) -> list[Record]:
        # `_id` strings compare by code points in MongoDB's default (binary) order, as R2 lists
        query: dict[str, Any] = {"_id": {"$gt": after}}
        if prefix:
            query["_id"]["$gte"] = max(prefix, after)  # with the range below: the keys with the prefix
            query["_id"]["$lt"] = prefix + "\U0010ffff"
        cursor = self.objects.find(query).sort("_id", 1).limit(limit)
        return [Record.from_doc(doc) async for doc in cursor if doc["_id"].startswith(prefix)]

    async def write_blob(self, blob: str, chunks: AsyncIterator[bytes]) -> int:
        size, segment = 0, 0
        stream = None
        try:
            async for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    if stream is None:
                        stream = self.gridfs.open_upload_stream_with_id(f"{blob}/{segment:05d}", blob)
                    room = SEGMENT - (size - segment * SEGMENT)
                    await stream.write(bytes(view[:room]))
                    size += min(room, len(view))
                    view = view[room:]
                    if size == (segment + 1) * SEGMENT:
                        await stream.close()
                        stream, segment = None, segment + 1
            if stream is None and size == 0:  # an empty value is one empty file
                stream = self.gridfs.open_upload_stream_with_id(f"{blob}/00000", blob)
            if stream is not None:
                await stream.close()
        except BaseException:
            if stream is not None:
                await stream.abort()
            await self.delete_blob(blob)
            raise
        return size

    async def read_blob(self, blob: str, offset: int, length: int) -> AsyncIterator[bytes]:
        if length <= 0:  # nothing to read (an empty value, or a range at its end); the blob must be there
            if await self.files.count_documents({"filename": blob}, limit=1) == 0:
                raise BlobGone(blob)
            return
        first, last = offset // SEGMENT, (offset + length - 1) // SEGMENT
        segments = [doc["_id"] async for doc in self.files.find(
            {"filename": blob, "_id": {"$gte": f"{blob}/{first:05d}", "$lte": f"{blob}/{last:05d}"}},
            {"_id": 1}).sort("_id", 1)]
        if len(segments) != last - first + 1:
            raise BlobGone(blob)
        left, skip = length, offset - first * SEGMENT
        for segment in segments:
            try:
                stream = await self.gridfs.open_download_stream(segment)
            except NoFile:
                raise BlobGone(blob) from None
            try:
                if skip:
                    await stream.seek(skip)
                    skip = 0
                while left > 0:
                    try:
                        chunk = await stream.read(min(CHUNK, left))
                    except (NoFile, CorruptGridFile):  # removed under the read: the caller reads the new one
                        raise BlobGone(blob) from None
                    if not chunk:
                        break
                    left -= len(chunk)
                    yield chunk
            finally:
                await stream.close()

    async def delete_blob(self, blob: str) -> None:
        async for doc in self.files.find({"filename": blob}, {"_id": 1}):
            try:
                await self.gridfs.delete(doc["_id"])
            except NoFile:
                pass

    async def retire(self, blob: str, due_ms: int) -> None:
        await self.retired.replace_one({"_id": blob}, {"_id": blob, "due_ms": due_ms}, upsert=True)

    async def sweep(self, now_ms: int) -> list[str]:
        due = [doc["_id"] async for doc in self.retired.find({"due_ms": {"$lte": now_ms}}, {"_id": 1}).limit(100)]
        if due:
            await self.retired.delete_many({"_id": {"$in": due}})
        return due

    async def create_upload(self, upload: Upload) -> None:
        await self.uploads.insert_one({"_id": upload.upload_id, **upload.__dict__})

    async def get_upload(self, upload_id: str) -> Upload | None:
        doc = await self.uploads.find_one({"_id": upload_id}, {"_id": 0})
        return Upload(**doc) if doc else None

    async def put_part(self, upload_id: str, part: Part) -> Part | None:
        await self._index()
        before = await self.parts_of.find_one_and_replace(
            {"upload_id": upload_id, "number": part.number}, {"upload_id": upload_id, **part.__dict__},
            projection={"_id": 0, "upload_id": 0}, upsert=True)
        return Part(**before) if before else None

    async def parts(self, upload_id: str) -> list[Part]:
        cursor = self.parts_of.find({"upload_id": upload_id}, {"_id": 0, "upload_id": 0}).sort("number", 1)
        return [Part(**doc) async for doc in cursor]

    async def end_upload(self, upload_id: str) -> bool:
        gone = (await self.uploads.delete_one({"_id": upload_id})).deleted_count
        await self.parts_of.delete_many({"upload_id": upload_id})
        return gone == 1

    async def close(self) -> None:
        pass  # the client belongs to whoever made the database handle
