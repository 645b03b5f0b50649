"""A Workers-model runtime: wrangler configs, env and bindings, Durable Objects, tail.

Public API for worker code: `DurableObject`, `env`, `Request`, `Response`, `register_error`, and
WebSockets (`WebSocketPair`, `WebSocketRequestResponsePair`, `bridge` to join one to a connection).
"""
from __future__ import annotations

from .compat.websocket import (
    WebSocket,
    WebSocketPair,
    WebSocketRequestResponsePair,
    is_upgrade,
)
from .env import env
from .errors import DataCloneError, ObjectUnavailable, RpcError, register_error
from .http import Request, Response
from .ids import DurableObjectId
from .objects import (
    AlarmInvocationInfo,
    DurableObject,
    DurableObjectNamespace,
    DurableObjectState,
    DurableObjectStub,
)

__all__ = [
    "AlarmInvocationInfo", "DataCloneError", "DurableObject", "DurableObjectId", "DurableObjectNamespace",
    "DurableObjectState", "DurableObjectStub", "ObjectUnavailable", "Request", "Response", "RpcError",
    "WebSocket", "WebSocketPair", "WebSocketRequestResponsePair", "env", "is_upgrade", "register_error",
]
