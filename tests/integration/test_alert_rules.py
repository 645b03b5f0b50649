"""The shipped Prometheus config, recording and alerting rules, checked by Prometheus's own
promtool: they parse, and every alert fires in its unit test (ops/prometheus/tests/) and stays
quiet on healthy input. `make test` installs promtool (Debian's prometheus package)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool is not None, "promtool is missing: `make test` installs it (apt-get install prometheus)"
    return subprocess.run([tool, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_the_rules_and_the_scrape_config_are_valid() -> None:
    checked = promtool("check", "rules", str(OPS / "rules.yml"), str(OPS / "alerts.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = promtool("check", "config", "--syntax-only", str(OPS / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_alert_fires_in_its_unit_test() -> None:
    tested = promtool("test", "rules", *map(str, sorted((OPS / "tests").glob("*.yml"))))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = {line.split("alert:", 1)[1].strip() for line in (OPS / "alerts.yml").read_text().splitlines()
              if line.strip().startswith("- alert:")}
    tests = "".join(path.read_text() for path in (OPS / "tests").glob("*.yml"))
    fired = {name for name in alerts if f"alertname: {name}\n        exp_alerts:\n          - exp_labels" in tests}
    assert fired == alerts, f"alerts never seen firing in a test: {sorted(alerts - fired)}"
