"""A worker's wrangler config: its shape (`schema.py`) and how it is read (`loading.py`)."""
from .loading import (
    CONFIG_NAMES,
    UNSUPPORTED_KINDS,
    config_in,
    discover,
    is_development,
    load,
)
from .schema import (
    AssetsConfig,
    ConfigError,
    D1DatabaseBinding,
    Dev,
    DurableObjectBinding,
    DurableObjects,
    EnvOverride,
    KVNamespace,
    Migration,
    R2BucketBinding,
    RawConfig,
    Secrets,
    ServiceBinding,
    Triggers,
    WorkerConfig,
    WorkflowBinding,
)

__all__ = ["AssetsConfig", "CONFIG_NAMES", "ConfigError", "D1DatabaseBinding", "Dev", "DurableObjectBinding", "DurableObjects", "EnvOverride", "KVNamespace", "Migration", "R2BucketBinding", "RawConfig", "Secrets", "ServiceBinding", "Triggers", "UNSUPPORTED_KINDS", "WorkerConfig", "WorkflowBinding", "config_in", "discover", "is_development", "load"]
