"""Durable Objects: the model code sees (`model`), the host that runs instances (`host`), the
namespaces, stubs and transports that reach them (`stubs`), and the event trampoline."""
from .host import ObjectHost
from .model import (
                    FETCH,
                    AlarmInvocationInfo,
                    BlockerTimedOut,
                    DurableObject,
                    DurableObjectState,
                    current_object,
)
from .stubs import DurableObjectNamespace, DurableObjectStub, LocalTransport, Transport
from .trampoline import detached

__all__ = ["FETCH", "AlarmInvocationInfo", "BlockerTimedOut", "DurableObject", "DurableObjectNamespace",
           "DurableObjectState", "DurableObjectStub", "LocalTransport", "ObjectHost", "Transport", "current_object",
           "detached"]
