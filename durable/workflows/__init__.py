"""Workflows (`workflows` in the config): durable execution on Durable Objects. Each instance is
an object of the workflow's own namespace (instance.py); its steps' results are stored as they
finish, so a run cut short (kill -9, a node lost) is replayed and finished steps are not run
again (steps.py); `env.MY_WORKFLOW` creates and controls instances (binding.py).
ARCHITECTURE.md, Workflows."""
from .binding import Workflow, WorkflowInstanceHandle
from .instance import class_name, instance_class
from .steps import NonRetryableError, Step, WorkflowEntrypoint

__all__ = ["NonRetryableError", "Step", "Workflow", "WorkflowEntrypoint", "WorkflowInstanceHandle", "class_name", "instance_class"]
