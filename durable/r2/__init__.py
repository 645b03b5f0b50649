"""R2 buckets (`r2_buckets` in the config): the binding's API (bucket.py, with its arguments,
conditions, values and multipart uploads apart) over a store on this host's disk (files.py), in
MongoDB GridFS for a cluster (gridfs.py) or in an S3-compatible service the config names (s3.py)."""
from .arguments import R2Error
from .bucket import R2Bucket
from .conditions import holds
from .multipart import R2MultipartUpload
from .values import R2Object, R2ObjectBody, R2Objects

__all__ = ["R2Bucket", "R2Error", "R2MultipartUpload", "R2Object", "R2ObjectBody", "R2Objects", "holds"]
