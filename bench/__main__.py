"""`make bench`: every benchmark, as JSON (bench/results.json) and a table.

Every figure comes with a baseline measured in the same run, reported as a ratio.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from pathlib import Path
from typing import Any

from .accounts_bench import bench_accounts
from .base_bench import bench_base
from .baseline_bench import bench_baseline
from .cluster_bench import bench_cluster
from .dashboard_bench import bench_dashboard
from .gateway_bench import bench_gateway
from .images_bench import bench_images
from .loop_bench import bench_loops
from .metrics_bench import bench_metrics
from .payments_bench import bench_payments
from .runtime_bench import bench_runtime
from .server_bench import bench_server

HERE = Path(__file__).resolve().parent


def table(results: dict[str, Any]) -> str:
    lines = []
    for group, benchmarks in results["benchmarks"].items():
        for name, figures in benchmarks.items():
            lines.append(f"{group}.{name}")
            if not isinstance(figures, dict):  # a note (a skip's reason, the baseline's commit)
                lines.append(f"  {figures}")
                continue
            for key, value in figures.items():
                lines.append(f"  {key:<28} {value}")
    return "\n".join(lines)


async def main(quick: bool) -> dict[str, Any]:
    return {"quick": quick, "python": platform.python_version(), "machine": platform.machine(),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "benchmarks": {"server": await bench_server(quick), "baseline": await bench_baseline(quick),
                           "event_loop": await bench_loops(quick), "runtime": await bench_runtime(quick), "base": await bench_base(quick),
                           "gateway": await bench_gateway(quick),
                           "payments": await bench_payments(quick),
                           "accounts": await bench_accounts(quick),
                           "metrics": await bench_metrics(quick),
                           "dashboard": {"hello": await bench_dashboard(quick)},
                           "images": await bench_images(quick),
                           "cluster": await bench_cluster(quick)}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (not for comparisons)")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    results = asyncio.run(main(args.quick))
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nwritten to {args.out}")
