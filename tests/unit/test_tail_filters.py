"""Tail filters: CLI flags → API filters (as workers-sdk maps them) → matching events."""
from __future__ import annotations

import pytest

from durable.observe.tail import TailFilters, cli_filters_to_api


def event(outcome="ok", method="GET", headers=None, logs=(), ip="10.0.0.1"):
    return {"scriptName": "w", "outcome": outcome,
            "event": {"request": {"method": method, "url": "http://x/", "headers": {"cf-connecting-ip": ip,
                                                                                   **(headers or {})}}},
            "logs": [{"message": [m], "level": "log", "timestamp": 0} for m in logs], "exceptions": []}


def test_cli_flags_map_to_api_filters() -> None:
    api = cli_filters_to_api(status=["error"], method=["post"], header="X-Env:prod", search="abc",
                             sampling_rate=0.5, ip=["self"])
    assert api == {"filters": [{"sampling_rate": 0.5},
                               {"outcome": ["exception", "exceededCpu", "exceededMemory", "unknown"]},
                               {"method": ["post"]}, {"header": {"key": "X-Env", "query": "prod"}},
                               {"client_ip": ["self"]}, {"query": "abc"}]}


def test_filters_match_events() -> None:
    f = TailFilters.from_api(cli_filters_to_api(status=["ok"], method=["get"], header="x-env", search="needle"))
    assert f.matches(event(headers={"x-env": "a"}, logs=["a needle here"]))
    assert not f.matches(event(outcome="exception", headers={"x-env": "a"}, logs=["needle"]))
    assert not f.matches(event(method="POST", headers={"x-env": "a"}, logs=["needle"]))
    assert not f.matches(event(logs=["needle"]))
    assert not f.matches(event(headers={"x-env": "a"}, logs=["hay"]))
    ip = TailFilters.from_api({"filters": [{"client_ip": ["self"]}]}, requester_ip="10.0.0.1")
    assert ip.matches(event()) and not ip.matches(event(ip="10.0.0.2"))


def test_sampling_rate_keeps_about_that_fraction() -> None:
    f = TailFilters.from_api({"filters": [{"sampling_rate": 0.25}]})
    kept = sum(f.matches(event()) for _ in range(4000))
    assert 700 < kept < 1300


@pytest.mark.parametrize("body", [{"filters": [{"outcome": "ok"}]}, {"filters": [{"nope": 1}]},
                                  {"filters": [{"sampling_rate": 2}]}, {"filters": "x"}])
def test_bad_filters_are_rejected(body) -> None:
    with pytest.raises(ValueError):
        TailFilters.from_api(body)


def test_credentials_in_a_query_string_never_reach_a_trace_event() -> None:
    from durable.observe.tail import redact_query

    assert redact_query("access_token=eyJ.abc&page=2") == "access_token=REDACTED&page=2"
    assert redact_query("page=1&Token=x") == "page=1&Token=REDACTED"
    assert redact_query("mytoken=1&q=access_token") == "mytoken=1&q=access_token"  # only whole parameter names
