"""Cloudflare's module names (`workers`, `asgi`, `js`, `pyodide`) are ours while a worker runs
here, even when the environment also has Cloudflare's `workers-runtime-sdk` (type stubs and
shims of the same top-level names, which would shadow ours depending on the path order)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

NAMES = ("workers", "asgi", "js", "pyodide")
OURS = Path(__file__).resolve().parents[2]  # the folder holding durable/ and those packages


def claim() -> None:
    """Load our packages under Cloudflare's names (before any worker module imports them)."""
    for name in NAMES:
        init = OURS / name / "__init__.py"
        loaded = sys.modules.get(name)
        if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == init:
            continue
        for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[module]  # someone else's, with its submodules
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
