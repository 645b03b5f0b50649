"""wrangler.jsonc / wrangler.json as Cloudflare writes them, and the cron schedule."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from durable import config as wconfig
from durable.cron import next_due, run_crons

JSONC = """// comments and trailing commas, as wrangler allows
{
  "$schema": "node_modules/wrangler/config-schema.json",
  "name": "shop-cron",
  "main": "src/entry.py",
  "compatibility_date": "2026-11-01",
  "compatibility_flags": ["python_workers"],
  "vars": {"A": "1",},
  "triggers": {"crons": ["*/5 * * * *", "0 3 * * mon"]},  /* block comment */
  "observability": {"enabled": true},
}
"""


def write(folder: Path, name: str, text: str) -> Path:
    (folder / "src").mkdir(parents=True, exist_ok=True)
    (folder / "src" / "entry.py").write_text("")
    path = folder / name
    path.write_text(text)
    return path


def test_jsonc_is_read_with_comments_trailing_commas_and_cloudflare_keys(tmp_path: Path) -> None:
    config = wconfig.load(write(tmp_path, "wrangler.jsonc", JSONC))
    assert config.name == "shop-cron" and config.vars == {"A": "1"}
    assert config.triggers.crons == ["*/5 * * * *", "0 3 * * mon"]


def test_json_is_preferred_to_toml_and_bad_input_says_where(tmp_path: Path) -> None:
    write(tmp_path, "wrangler.toml", 'name = "from-toml"\nmain = "src/entry.py"\ncompatibility_date = "2026-11-01"\n')
    write(tmp_path, "wrangler.jsonc", JSONC)
    assert wconfig.discover(tmp_path) == [tmp_path / "wrangler.jsonc"]
    bad = write(tmp_path / "bad", "wrangler.jsonc", JSONC.replace("*/5 * * * *", "every five minutes"))
    with pytest.raises(wconfig.ConfigError, match=r"triggers.crons.*not a cron expression"):
        wconfig.load(bad)
    broken = write(tmp_path / "broken", "wrangler.json", "{ not json")
    with pytest.raises(wconfig.ConfigError, match="not valid JSON"):
        wconfig.load(broken)


def test_next_due_is_utc_and_names_every_expression_due_then() -> None:
    monday_0259 = datetime(2026, 11, 30, 2, 59, 30, tzinfo=timezone.utc).timestamp()
    due, which = next_due(["*/5 * * * *", "0 3 * * mon"], monday_0259)
    assert datetime.fromtimestamp(due, tz=timezone.utc) == datetime(2026, 11, 30, 3, 0, tzinfo=timezone.utc)
    assert which == ["*/5 * * * *", "0 3 * * mon"]
    due, which = next_due(["*/5 * * * *", "0 3 * * mon"], due)
    assert which == ["*/5 * * * *"] and due - monday_0259 == 330


async def test_the_schedule_runs_each_due_time_once_and_only_where_it_fires() -> None:
    now = [datetime(2026, 11, 30, 2, 59, 30, tzinfo=timezone.utc).timestamp()]
    runs: list[tuple[str, int]] = []

    async def sleep(seconds: float) -> None:
        now[0] += seconds
        if len(runs) >= 3:
            raise asyncio.CancelledError

    async def scheduled(cron: str, scheduled_ms: int) -> str:
        runs.append((cron, scheduled_ms))
        return "ok"

    worker = SimpleNamespace(name="w", config=SimpleNamespace(triggers=SimpleNamespace(crons=["*/5 * * * *"])),
                             scheduled=scheduled)
    with pytest.raises(asyncio.CancelledError):
        await run_crons(worker, clock=lambda: now[0], sleep=sleep)
    start = datetime(2026, 11, 30, 3, 0, tzinfo=timezone.utc).timestamp() * 1000
    assert runs == [("*/5 * * * *", int(start + i * 300_000)) for i in range(3)]

    runs.clear()
    fires = iter([False, True, False, True])
    with pytest.raises(asyncio.CancelledError):
        await run_crons(worker, lambda: next(fires, True), clock=lambda: now[0], sleep=sleep)
    assert len(runs) == 3 and runs[1][1] - runs[0][1] == 600_000  # a due time another node fires is skipped


LOOSE = """{
  "name": "loose", "main": "src/entry.py", "compatibility_date": "2026-11-01",
  "ai": {"binding": "AI"},
  "queues": {"producers": [{"binding": "JOBS", "queue": "jobs"}], "consumers": [{"queue": "jobs"}]},
  "placement": {"mode": "smart"},
  "d1_databases": [{"binding": "DB", "database_name": "notes", "remote": true}],
}"""


def test_dev_warns_about_keys_it_does_not_run_and_serve_refuses_them(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "wrangler.jsonc", LOOSE)
    with pytest.raises(wconfig.ConfigError, match="unknown key"):
        wconfig.load(path)  # strict, as `wrangler serve` loads
    config = wconfig.load(path, strict=False)
    assert config.unsupported_bindings == {"AI": "ai", "JOBS": "queues"}
    assert config.d1_databases[0].database_name == "notes"  # the rest of a binding stays
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "placement" in warned and "d1_databases[0].remote" in warned and "'ai' bindings" in warned
    broken = write(tmp_path / "b", "wrangler.jsonc", LOOSE.replace('"2026-11-01"', '"yesterday"'))
    with pytest.raises(wconfig.ConfigError, match="compatibility_date"):
        wconfig.load(broken, strict=False)  # only unknown keys are tolerated


def test_an_unsupported_binding_says_so_when_used() -> None:
    from durable.env import BindingUnavailable, UnsupportedBinding
    with pytest.raises(BindingUnavailable, match="env.AI is a 'ai' binding"):
        UnsupportedBinding("ai", "AI").run("@cf/meta/llama", {"prompt": "hi"})


def test_unsupported_bindings_of_an_environment_are_that_environment_s(tmp_path: Path) -> None:
    text = LOOSE.replace('"placement": {"mode": "smart"},', '"env": {"production": {"ai": {"binding": "PROD_AI"}}},')
    path = write(tmp_path, "wrangler.jsonc", text)
    assert wconfig.load(path, strict=False).unsupported_bindings == {"AI": "ai", "JOBS": "queues"}
    assert wconfig.load(path, "production", strict=False).unsupported_bindings == {"PROD_AI": "ai"}
