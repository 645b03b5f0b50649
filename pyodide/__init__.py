"""The `pyodide` module names Cloudflare's Python Workers import (`pyodide.ffi`, `pyodide.http`),
so code written for Cloudflare imports them unchanged: thin re-exports of `durable/compat/`."""
