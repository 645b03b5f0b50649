"""A real browser for page tests: headless Chromium driven by Selenium through Debian's
chromedriver (`make test` installs both when root), console messages kept for assertions."""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import ROOT

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "build" / "test-artifacts"))


def _found(*names: str) -> str | None:
    return next((path for path in map(shutil.which, names) if path), None)


@contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator[object]:
    """A headless Chromium window; skipped, saying why, where neither it nor its driver is installed."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = _found("chromium", "chromium-browser", "google-chrome"), _found("chromedriver")
    if browser is None or driver is None:
        pytest.skip("Chromium and chromedriver are not installed (`make test` installs them when root: "
                    "apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={width},{height}", "--no-first-run", "--disable-extensions"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    window = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield window
    finally:
        window.quit()


def console_errors(window: object) -> list[str]:
    """What the page logged at error level since the last call (Chrome's SEVERE)."""
    return [entry["message"] for entry in window.get_log("browser") if entry["level"] == "SEVERE"]  # type: ignore[attr-defined]


def screenshot(window: object, name: str) -> Path:
    """Save the window as <ARTIFACTS>/<name>.png (kept after the run, for people to look at)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    window.save_screenshot(str(path))  # type: ignore[attr-defined]
    return path
