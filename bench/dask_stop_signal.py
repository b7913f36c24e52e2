"""What the night's stop signal costs a task on a Dask worker: the check made before each customer.

A task of the scale-out night asks the scheduler before each customer whether its run was
interrupted (:func:`flows.fanout.stop_sent`). This times that check in a real worker process of a
``LocalCluster``: the first (the worker's client made), then the median of ``--calls``, against the
scale-out night's cost of a customer (docs/BENCHMARKS.md, "Today's figures": 0.078 s).

    python bench/dask_stop_signal.py --report docs/results/dask-stop-signal-2026-12-07.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def time_checks(calls: int) -> dict:
    """In a Dask task: the stop check made, then ``calls`` checks timed one by one."""
    from flows.fanout import stop_sent, stop_signal

    began = time.perf_counter()
    stopped = stop_sent(stop_signal())
    first = stopped()
    made_s = time.perf_counter() - began
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        assert stopped() is False
        times.append(time.perf_counter() - t)
    return {"first_check_s": made_s, "stopped": first, "median_check_s": statistics.median(times),
            "p95_check_s": sorted(times)[int(0.95 * (len(times) - 1))]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--tasks", type=int, default=3, help="tasks, one after another on the one worker")
    ap.add_argument("--report", type=Path)
    args = ap.parse_args()
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster) as client:
        client.run(sys.path.insert, 0, str(ROOT))
        runs = [client.submit(time_checks, args.calls, pure=False).result() for _ in range(args.tasks)]
    result = {"date": str(date.today()), "machine": f"{platform.node()} ({platform.processor() or platform.machine()})",
              "calls": args.calls, "tasks": runs,
              "median_check_ms": statistics.median(r["median_check_s"] for r in runs) * 1e3,
              "share_of_a_scaled_out_customer": statistics.median(r["median_check_s"] for r in runs) / 0.078}
    print(json.dumps(result, indent=2))
    if args.report:
        args.report.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
