"""What the night's per-customer lock costs: taken and released once a customer.

A planned night asks whether a customer is drawn, and draws it, under the customer's night lock
(:func:`metagan.lifecycle.batches.night_lock_name`), so two runs of one night that meet at a
customer draw it once. This times taking and releasing it with each profile's locker: a file lock
beside a registry (embedded) and an advisory lock on a throwaway PostgreSQL (scale-out; Debian's
binaries, as the tests start it), ``--customers`` distinct customers, against the night's cost of a
customer (docs/BENCHMARKS.md, "Today's figures": 0.048 s embedded, 0.078 s scaled out).

    python bench/night_lock.py --report docs/results/night-lock-2026-12-07.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NIGHT_S = {"embedded": 0.048, "scaleout": 0.078}


def time_locker(locker, customers: int) -> dict:
    from metagan.lifecycle.batches import night_lock_name

    times = []
    for i in range(customers):
        t = time.perf_counter()
        with locker(night_lock_name(f"c{i:06d}")):
            pass
        times.append(time.perf_counter() - t)
    return {"median_ms": statistics.median(times) * 1e3, "p95_ms": sorted(times)[int(0.95 * (len(times) - 1))] * 1e3,
            "first_ms": times[0] * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--no-postgres", action="store_true", help="the file lock only")
    ap.add_argument("--report", type=Path)
    args = ap.parse_args()
    from metagan.locks import advisory_locker, file_locker

    result = {"date": str(date.today()), "machine": f"{platform.node()} ({platform.processor() or platform.machine()})",
              "customers": args.customers}
    with tempfile.TemporaryDirectory() as tmp:
        result["embedded"] = time_locker(file_locker(Path(tmp) / "locks"), args.customers)
    if not args.no_postgres:
        from tests.servers import Postgres

        pg = Postgres(Path(tempfile.mkdtemp()))
        pg.start()
        try:
            pg.create_database("index")
            url = pg.url("index").replace("postgresql+psycopg://", "postgresql://")
            result["scaleout"] = time_locker(advisory_locker(url), args.customers)
        finally:
            pg.cleanup()
    for profile in ("embedded", "scaleout"):
        if profile in result:
            result[profile]["share_of_a_night_customer"] = result[profile]["median_ms"] / 1e3 / NIGHT_S[profile]
    print(json.dumps(result, indent=2))
    if args.report:
        args.report.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
