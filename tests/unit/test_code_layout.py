"""Rules of the code's layout that a reader relies on, checked: the runtime's wire is spelled in
one module, and test modules share helpers through tests/ modules, never through each other."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("durable", "wrangler", "gateway", "base", "payments", "images", "models", "workers", "js", "asgi", "tests")
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
