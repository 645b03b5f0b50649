"""The dashboard's figures: rates and quantiles from the differences between two readings of the
request metrics (as Prometheus's rate() and histogram_quantile() compute them)."""
from __future__ import annotations

import math

from durable.observe.dashboard.series import (
    Sampler,
    Totals,
    point,
    quantile,
    read_totals,
)
from durable.observe.metrics import RequestMeter


def test_a_quantile_is_interpolated_inside_its_bucket() -> None:
    buckets = {0.1: 10.0, 0.2: 20.0, math.inf: 20.0}
    assert quantile(0.5, buckets) == 0.1
    assert math.isclose(quantile(0.75, buckets), 0.15)
    assert quantile(0.99, {0.1: 0.0, 1.0: 0.0, math.inf: 0.0}) is None
    assert quantile(0.99, {0.1: 5.0, 1.0: 5.0, math.inf: 10.0}) == 1.0  # above the last bound: that bound


def test_a_point_is_what_happened_between_two_readings() -> None:
    before = Totals(requests=100, errors=1, cpu_seconds=0.5, cpu_count=100, wall={0.01: 90, 0.1: 100, math.inf: 100})
    now = Totals(requests=150, errors=6, cpu_seconds=0.6, cpu_count=150, wall={0.01: 100, 0.1: 150, math.inf: 150})
    p = point(1000.0, 5.0, now, before)
    assert p["rps"] == 10.0 and p["errorRatio"] == 0.1 and p["requests"] == 150
    assert p["cpuMsPerRequest"] == 2.0  # 0.1 s over 50 requests
    assert 10 < p["p50Ms"] < 100 and p["p99Ms"] <= 100
    assert point(1000.0, 5.0, before, before)["errorRatio"] == 0.0


def test_totals_sum_routes_and_count_5xx_and_unanswered_as_errors() -> None:
    gateway, api = RequestMeter("t-gw"), RequestMeter("t-api")
    for _ in range(7):
        gateway.observe("/a", "GET", 200, 0.004, 0.002)
    gateway.observe("/b", "POST", 503, 0.2, None)
    gateway.observe("/b", "POST", 500, 40.0, 0.001)
    gateway.count("/ws", "GET", None)  # never answered
    api.observe("/a", "GET", 404, 0.001, 0.0)
    totals = read_totals({"gw": gateway, "api": api, "off": None})
    assert set(totals) == {"gw", "api"}  # a worker without metrics has no figures
    assert (totals["gw"].requests, totals["gw"].errors, totals["gw"].cpu_count) == (10, 3, 8)
    assert math.isclose(totals["gw"].cpu_seconds, 0.015)
    assert totals["gw"].wall[0.0025] == 0 and totals["gw"].wall[0.005] == 7 and totals["gw"].wall[0.25] == 8
    assert totals["gw"].wall[30.0] == 8 and totals["gw"].wall[math.inf] == 9  # 40 s: above every bound
    assert (totals["api"].requests, totals["api"].errors) == (1, 0)


def test_the_sampler_keeps_one_point_per_step_for_each_worker() -> None:
    wall, elapsed = iter([1000.0, 995.0, 1010.0]), iter([0.0, 5.0, 10.0])  # the wall clock stepped back
    readings = iter([{"gw": Totals(requests=0)}, {"gw": Totals(requests=50)}, {}])
    sampler = Sampler(["gw", "api"], read=lambda: next(readings), clock=lambda: next(wall),
                      span_clock=lambda: next(elapsed))
    sampler.sample()
    assert sampler.series() == {"gw": [], "api": []}
    sampler.sample()
    sampler.sample()  # counters that went down were reset: no negative rates
    series = sampler.series()
    assert [p["rps"] for p in series["gw"]] == [10.0, 0.0] and [p["rps"] for p in series["api"]] == [0.0, 0.0]
