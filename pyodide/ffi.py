"""`from pyodide.ffi import to_js, create_proxy, JsProxy, jsnull, run_sync` — see durable/compat/ffi.py."""
from durable.compat.ffi import (JsArray, JsBuffer, JsObject, JsProxy, create_once_callable, create_proxy, jsnull,
                                run_sync, to_js, to_py)

__all__ = ["JsArray", "JsBuffer", "JsObject", "JsProxy", "create_once_callable", "create_proxy", "jsnull", "run_sync",
           "to_js", "to_py"]
