"""R2's multipart uploads: parts of at least 5 MiB but the last, completed into one object."""
from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .arguments import MAX_PARTS, MIN_PART_BYTES, R2Error, clock_ms
from .store import BlobGone, Part, Record, Upload
from .values import Hashing, R2Object, iter_chunks

if TYPE_CHECKING:
    from .bucket import R2Bucket


class R2MultipartUpload:
    """Parts uploaded in any order (one at a time or together), then `complete` or `abort`."""

    def __init__(self, bucket: R2Bucket, key: str, upload_id: str) -> None:
        self._bucket = bucket
        self.key = key
        self.uploadId = self.upload_id = upload_id

    async def _upload(self, operation: str) -> Upload:
        upload = await self._bucket.store.get_upload(self.uploadId)
        if upload is None or upload.key != self.key:
            raise R2Error(operation, "The specified multipart upload does not exist.", 10024)
        return upload

    async def uploadPart(self, partNumber: int, value: Any) -> dict[str, Any]:
        """Store one part; `{partNumber, etag}` for `complete`."""
        if not isinstance(partNumber, int) or not 1 <= partNumber <= MAX_PARTS:
            raise TypeError(f"Part number must be between 1 and {MAX_PARTS} (inclusive). Actual value was: {partNumber}")
        await self._upload("uploadPart")
        store = self._bucket.store
        blob = f"{self.uploadId}.{partNumber}.{secrets.token_hex(4)}"
        hashing = Hashing(iter_chunks(value), ("md5",))
        size = await store.write_blob(blob, aiter(hashing))
        part = Part(partNumber, blob, size, hashing.hashes["md5"].hexdigest())
        replaced = await store.put_part(self.uploadId, part)
        if await store.get_upload(self.uploadId) is None:  # aborted or completed meanwhile: nothing left behind
            await store.end_upload(self.uploadId)  # (the part's row, written after the end)
            await self._bucket.retire(blob)
            raise R2Error("uploadPart", "The specified multipart upload does not exist.", 10024)
        if replaced is not None:  # (a complete may be joining it: removed later, not now)
            await self._bucket.retire(replaced.blob)
        return {"partNumber": partNumber, "etag": part.etag}

    upload_part = uploadPart

    async def abort(self) -> None:
        """End the upload and drop its parts; one already ended is no error (as R2's)."""
        store = self._bucket.store
        upload = await store.get_upload(self.uploadId)
        if upload is None:
            return
        if upload.key != self.key:
            raise R2Error("abortMultipartUpload", "We encountered an internal error. Please try again.", 10001)
        parts = await store.parts(self.uploadId)
        if await store.end_upload(self.uploadId):
            for part in parts:
                await self._bucket.retire(part.blob)

    async def complete(self, uploadedParts: Iterable[Mapping[str, Any]]) -> R2Object:
        """Join the listed parts, in part-number order, into the object (replacing any there)."""
        upload = await self._upload("completeMultipartUpload")
        store = self._bucket.store
        stored = {part.number: part for part in await store.parts(self.uploadId)}
        listed = [(int(p["partNumber"]), str(p["etag"]).strip('"')) for p in uploadedParts]
        if len({number for number, _ in listed}) != len(listed):
            raise R2Error("completeMultipartUpload", "We encountered an internal error. Please try again.", 10001)
        chosen: list[Part] = []
        for number, etag in listed:
            part = stored.get(number)
            if part is None or part.etag != etag:
                if await store.get_upload(self.uploadId) is None:  # ended (an abort) while we read its parts
                    raise R2Error("completeMultipartUpload", "The specified multipart upload does not exist.", 10024)
                raise R2Error("completeMultipartUpload", "One or more of the specified parts could not be found.",
                              10025)
            chosen.append(part)
        if any(part.size < MIN_PART_BYTES for part in chosen[:-1]):  # in the order given
            raise R2Error("completeMultipartUpload", "Your proposed upload is smaller than the minimum allowed "
                          "object size.", 10011)
        chosen.sort(key=lambda part: part.number)
        if chosen and (any(part.size != chosen[0].size for part in chosen[:-1]) or chosen[-1].size > chosen[0].size
                       or (len(chosen) > 1 and chosen[0].size < MIN_PART_BYTES)):
            raise R2Error("completeMultipartUpload", "There was a problem with the multipart upload: all "
                          "non-trailing parts must have the same size.", 10048)
        # claimed before its parts are read: a second complete, an abort or a late part finds it ended
        if not await store.end_upload(self.uploadId):
            raise R2Error("completeMultipartUpload", "The specified multipart upload does not exist.", 10024)
        version = secrets.token_hex(16)

        async def joined() -> AsyncIterator[bytes]:
            for part in chosen:
                async for chunk in store.read_blob(part.blob, 0, part.size):
                    yield chunk
        try:
            size = await store.write_blob(version, joined())
        except BlobGone:
            raise R2Error("completeMultipartUpload", "We encountered an internal error. Please try again.",
                          10001) from None
        finally:
            for part in stored.values():
                await self._bucket.retire(part.blob)
        etag = hashlib.md5(b"".join(bytes.fromhex(p.etag) for p in chosen)).hexdigest() + f"-{len(chosen)}"
        record = Record(self.key, version, version, size, etag, clock_ms(), upload.http_metadata,
                        upload.custom_metadata, {})
        await self._bucket.install(record, None)
        return R2Object(record)
