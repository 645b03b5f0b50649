"""The image service's own metrics (on the worker's /metrics, beside the runtime's)."""
from __future__ import annotations

from prometheus_client import Counter, Histogram

from durable.observe.metrics import WALL_BUCKETS

VARIANTS = Counter("images_variants", "Transformed images answered, by how (hit: kept in the bucket; "
                   "miss: rendered now)", ["outcome"])
REFUSED = Counter("images_refused", "Transformations and uploads refused, by reason", ["reason"])
RENDER_SECONDS = Histogram("images_render_duration_seconds", "Wall time of rendering one variant in the pool",
                           buckets=WALL_BUCKETS)
UPLOADS = Counter("images_uploads", "Images stored from product uploads")
for outcome in ("hit", "miss"):
    VARIANTS.labels(outcome)
