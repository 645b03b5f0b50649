"""`from workers.workflows import NonRetryableError`: Cloudflare's Python Workflows names."""
from durable.workflows import NonRetryableError, WorkflowEntrypoint

__all__ = ["NonRetryableError", "WorkflowEntrypoint"]
