"""One serializer for storage values and RPC payloads: BSON, with Durable Object ids as a type.

BSON (pymongo's C codec) covers the JSON types plus datetime, bytes, ObjectId and Decimal128;
every stored or sent value is a fresh copy on the other side, as with structured clone.
"""
from __future__ import annotations

from typing import Any

import bson
from bson.binary import Binary
from bson.codec_options import CodecOptions, TypeDecoder, TypeEncoder, TypeRegistry
from bson.errors import BSONError

from .errors import DataCloneError
from .ids import DurableObjectId

_ID_SUBTYPE = 0x80  # user-defined Binary subtype for Durable Object ids


class _IdEncoder(TypeEncoder):
    python_type = DurableObjectId

    def transform_python(self, value: DurableObjectId) -> Binary:
        payload = str(value) + ("\x00" + value.name if value.name is not None else "")
        return Binary(payload.encode("utf-8"), _ID_SUBTYPE)


class _IdDecoder(TypeDecoder):
    bson_type = Binary

    def transform_bson(self, value: Binary) -> Any:
        if value.subtype != _ID_SUBTYPE:
            return value
        hex_id, _, name = bytes(value).decode("utf-8").partition("\x00")
        return DurableObjectId(hex_id, name if _ else None)


_OPTIONS = CodecOptions(tz_aware=True, type_registry=TypeRegistry([_IdEncoder(), _IdDecoder()]))


def encode(value: Any, what: str = "value") -> bytes:
    """Serialize `value`; raise DataCloneError naming `what` if it cannot cross the boundary."""
    try:
        return bson.encode({"v": value}, codec_options=_OPTIONS)
    except (BSONError, TypeError, OverflowError) as exc:
        raise DataCloneError(f"{what} could not be serialized: {exc}") from None


def decode(data: bytes) -> Any:
    return bson.decode(data, codec_options=_OPTIONS)["v"]
