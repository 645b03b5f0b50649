"""Many nodes: placement (shard → owner), membership, shard leases and fencing, routing.

`ClusterNode` joins a runtime to a cluster whose coordination store is a MongoDB database;
`ClusterTransport` carries object calls to whichever node owns the object. See ARCHITECTURE.md,
"Beyond one machine".
"""
from __future__ import annotations

from .node import ClusterNode, ClusterSettings
from .transport import ClusterTransport

__all__ = ["ClusterNode", "ClusterSettings", "ClusterTransport"]
