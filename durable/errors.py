"""Errors the runtime raises, and how object errors cross an RPC boundary with type and message."""
from __future__ import annotations

import builtins
from typing import Any


class DurableError(Exception):
    """Base of every error raised by the runtime itself."""


class DataCloneError(DurableError, TypeError):
    """A value cannot be stored or sent over RPC (not JSON/BSON-able)."""


class RpcError(DurableError):
    """An error raised inside a Durable Object whose class the caller does not know.

    `remote_type` keeps the original class name, so callers can still branch on it.
    """

    remote_type: str = "Error"

    def __init__(self, message: str, remote_type: str | None = None) -> None:
        super().__init__(message)
        if remote_type:
            self.remote_type = remote_type


class ObjectUnavailable(DurableError):
    """The object's host (another worker process or node) cannot be reached; worth a retry."""

    retryable = True


class ObjectMoved(ObjectUnavailable):
    """This instance of the object is no longer the live one: its node gave the shard up (or
    lost it) while the instance still had work under way, so whatever that work writes now is
    refused, even if the shard has come back to this node since (a newer instance owns it)."""


class NotDelivered(ObjectUnavailable):
    """The call certainly did not run (refused, or no connection was made): safe to send again."""


class NotOwner(NotDelivered):
    """This node does not own the object's shard (it moved, or is moving): ask the owner."""


# Exception classes that cross RPC as themselves; services register their own shared errors.
_REGISTRY: dict[str, type[BaseException]] = {}
_BUILTIN_NAMES = {
    "ValueError", "TypeError", "KeyError", "LookupError", "IndexError", "PermissionError",
    "RuntimeError", "NotImplementedError", "TimeoutError", "ArithmeticError", "ZeroDivisionError",
    "AssertionError", "AttributeError", "OverflowError",
}


def register_error(cls: type[BaseException]) -> type[BaseException]:
    """Class decorator: let `cls` be re-raised as itself on the caller's side of an RPC.

    The class must accept a single message argument.
    """
    _REGISTRY[cls.__name__] = cls
    return cls


for _cls in (DataCloneError, RpcError, ObjectUnavailable, ObjectMoved, NotDelivered, NotOwner):
    register_error(_cls)


def error_to_wire(exc: BaseException) -> dict[str, Any]:
    message = str(exc.args[0]) if len(exc.args) == 1 else str(exc)
    name = exc.remote_type if isinstance(exc, RpcError) and type(exc) is RpcError else type(exc).__name__
    return {"type": name, "message": message}


def error_from_wire(data: dict[str, Any]) -> BaseException:
    name = str(data.get("type") or "Error")
    message = str(data.get("message") or "")
    cls = _REGISTRY.get(name)
    if cls is None and name in _BUILTIN_NAMES:
        cls = getattr(builtins, name)
    error: BaseException = RpcError(message, name)
    if cls is not None and cls is not RpcError:
        try:
            error = cls(message)
        except Exception:  # a registered class with an unusual constructor
            pass
    # as Cloudflare's: it came from the other side; may the caller simply try again?
    error.remote = True  # type: ignore[attr-defined]
    error.retryable = bool(getattr(type(error), "retryable", False))  # type: ignore[attr-defined]
    error.overloaded = False  # type: ignore[attr-defined]
    return error


class StartupRefused(Exception):
    """A worker will not start with this configuration (a missing or weak secret, say): the
    message says what to fix; `wrangler` prints it and exits 1, no traceback."""
