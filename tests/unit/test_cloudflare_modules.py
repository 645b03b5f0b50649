"""With Cloudflare's `workers-runtime-sdk` in the same environment (its own top-level `workers`,
`asgi`, `js`, `pyodide`), a worker still imports ours."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_our_cloudflare_modules_win_over_a_shadowing_package(tmp_path: Path) -> None:
    shadow = tmp_path / "site"
    for name in ("workers", "asgi", "js", "pyodide"):
        (shadow / name).mkdir(parents=True)
        (shadow / name / "__init__.py").write_text("SHADOW = True\n")
    script = ("import sys; sys.path.insert(0, %r)\n"
              "import workers; assert getattr(workers, 'SHADOW', False)  # the shadow is first on the path\n"
              "from durable.compat import modules; modules.claim()\n"
              "import workers, asgi, js, pyodide\n"
              "from workers import wsgi, WorkerEntrypoint, WorkflowEntrypoint\n"
              "from pyodide.ffi import to_js\n"
              "assert not any(hasattr(m, 'SHADOW') for m in (workers, asgi, js, pyodide))\n"
              "print('ours')\n") % str(shadow)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ours", result.stderr
