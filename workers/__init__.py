"""Cloudflare's Python Workers API, provided by this runtime: code written for Cloudflare
(`from workers import Response, WorkerEntrypoint, DurableObject`) runs here unchanged.

The implementation is the runtime's own (`durable/`); these are Cloudflare's names for it.
"""
from durable.compat.entrypoint import ExecutionContext, ScheduledController, WorkerEntrypoint, handler, wait_until
from durable.compat.fetch import fetch
from durable.compat.forms import Blob, File, FormData
from durable.compat.websocket import WebSocket, WebSocketPair, WebSocketRequestResponsePair
from durable.http import Request, Response
from durable.env import env
from durable.objects import DurableObject
from durable.workflows import NonRetryableError, WorkflowEntrypoint

from . import workflows, wsgi

__all__ = ["Blob", "DurableObject", "File", "FormData", "ExecutionContext", "Request", "Response", "ScheduledController", "WorkerEntrypoint",
           "WebSocket", "WebSocketPair", "WebSocketRequestResponsePair", "NonRetryableError", "WorkflowEntrypoint", "env", "fetch", "handler", "wait_until", "workflows",
           "wsgi"]
