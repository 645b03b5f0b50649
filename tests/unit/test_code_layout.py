"""Rules of the code's layout that a reader relies on, checked: the runtime's wire is spelled in
one module, and test modules share helpers through tests/ modules, never through each other."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("durable", "wrangler", "gateway", "base", "payments", "images", "models", "workers", "js", "asgi", "web", "tests")
RPC = ROOT / "durable" / "rpc"
TEST_FOLDERS = ("unit", "integration", "e2e", "resilience", "property", "faults")


def test_the_runtime_s_internal_prefix_and_headers_are_spelled_only_in_durable_rpc() -> None:
    spelled = re.compile("x-" + "durable-|/cdn-cgi/" + "durable", re.IGNORECASE)  # (not spelled here either)
    found = [f"{path.relative_to(ROOT)}:{number}" for package in PACKAGES for path in (ROOT / package).rglob("*.py")
             if RPC not in path.parents for number, line in enumerate(path.read_text().splitlines(), 1)
             if spelled.search(line)]
    assert found == [], "spelled outside durable/rpc/: " + ", ".join(found)


def test_no_test_module_imports_another() -> None:
    importing = re.compile(rf"^\s*(from|import)\s+tests\.({'|'.join(TEST_FOLDERS)})\.", re.MULTILINE)
    found = [str(path.relative_to(ROOT)) for folder in TEST_FOLDERS for path in (ROOT / "tests" / folder).rglob("*.py")
             if importing.search(path.read_text())]
    assert found == [], "helpers belong in tests/*.py or conftest.py: " + ", ".join(found)


SERVICES = ("gateway", "base", "payments", "images")


def _imports(path: Path) -> set[str]:
    """The top-level packages a module imports (relative imports stay in their own package)."""
    found = re.findall(r"^\s*(?:from|import)\s+([a-zA-Z_][\w]*)", path.read_text(), re.MULTILINE)
    return set(found)


def test_models_hold_shapes_only_no_web_framework_or_database_driver() -> None:
    glue = {"quart", "quart_schema", "werkzeug", "jwt", "pymongo", "aiohttp"}
    found = {str(path.relative_to(ROOT)): sorted(_imports(path) & glue) for path in (ROOT / "models").rglob("*.py")}
    assert {path: used for path, used in found.items() if used} == {}


def test_services_never_import_each_other_and_shared_packages_import_no_service() -> None:
    crossing = []
    for package in (*SERVICES, "web", "models", "durable", "wrangler"):
        allowed = {package} if package in SERVICES else set()
        for path in (ROOT / package).rglob("*.py"):
            used = _imports(path) & set(SERVICES) - allowed
            if used:
                crossing.append(f"{path.relative_to(ROOT)} imports {sorted(used)}")
    assert crossing == []


def test_no_function_is_over_60_lines_and_no_runtime_module_over_450() -> None:
    """Small enough to read whole: the limits the restructuring set (ARCHITECTURE.md, Folders)."""
    import ast
    long_functions = []
    for package in (*PACKAGES, "bench"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None:
                    length = node.end_lineno - node.lineno + 1
                    if length > 60:
                        long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length})")
    long_modules = [f"{path.relative_to(ROOT)} ({n})" for path in (ROOT / "durable").rglob("*.py")
                    if (n := len(path.read_text().splitlines())) > 450]
    assert long_functions == [] and long_modules == []


MAPPED = ("durable", "wrangler", "gateway", "base", "payments", "images", "models", "web", "pyodide")


def test_architecture_s_module_map_has_one_row_per_module_of_the_tree() -> None:
    """ARCHITECTURE.md's module map stays the tree: a module added, moved or removed without its
    row (or a row left for a module that is gone) fails here."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    section = text.split("\n## Module map", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\|\s*`([\w/.-]+\.py)`\s*\|", section, re.MULTILINE)
    modules = sorted(str(path.relative_to(ROOT)) for package in MAPPED for path in (ROOT / package).rglob("*.py")
                     if path.name != "__init__.py")
    assert len(rows) == len(set(rows)), "a module listed twice"
    assert {"missing rows": sorted(set(modules) - set(rows)), "rows without a module": sorted(set(rows) - set(modules))} \
        == {"missing rows": [], "rows without a module": []}
