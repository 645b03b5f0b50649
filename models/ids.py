"""Ids in the API: 24-hex ObjectId strings."""
from __future__ import annotations

from typing import Annotated

from bson import ObjectId
from pydantic import Field

# an id in a path, as our routes match it and the documents describe it (ids we hand out are lowercase)
PATH_OBJECT_ID = "[0-9a-f]{24}"

ObjectIdStr = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{24}$", description="24-hex ObjectId")]


def is_object_id(value: str) -> bool:
    return len(value) == 24 and all(c in "0123456789abcdefABCDEF" for c in value)


def oid(value: str) -> ObjectId | None:
    """The ObjectId for a 24-hex string, or None (never raises on client input)."""
    return ObjectId(value) if isinstance(value, str) and is_object_id(value) else None
