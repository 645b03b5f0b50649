"""R2 buckets (`r2_buckets` in the config): the binding's API (bucket.py) over a store on this
host's disk (files.py) or in MongoDB GridFS for a cluster (mongo.py)."""
from .bucket import (
    R2Bucket,
    R2Error,
    R2MultipartUpload,
    R2Object,
    R2ObjectBody,
    R2Objects,
)

__all__ = ["R2Bucket", "R2Error", "R2MultipartUpload", "R2Object", "R2ObjectBody", "R2Objects"]
