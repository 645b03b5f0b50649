"""R2 buckets (`r2_buckets` in the config): the binding's API (bucket.py) over a store on this
host's disk (files.py), in MongoDB GridFS for a cluster (mongo.py) or in an S3-compatible
service the config names (s3.py)."""
from .bucket import (
    R2Bucket,
    R2Error,
    R2MultipartUpload,
    R2Object,
    R2ObjectBody,
    R2Objects,
    holds,
)

__all__ = ["R2Bucket", "R2Error", "R2MultipartUpload", "R2Object", "R2ObjectBody", "R2Objects", "holds"]
