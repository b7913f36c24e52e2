"""Planning a night and an hour against fleets of 1,000 to 1,000,000 customers: the fleet index
alone, on both profiles' databases (SQLite beside the embedded registry; PostgreSQL on loopback).

    python bench/plan_scaling.py --customers 1000,10000,100000,1000000 --report docs/results/plan-scaling-....json

For each fleet size the index is filled with that many customers (a production version each, their
last batch drawn, next due tomorrow), then two shapes of change are timed, each the median of
``--repeats`` plans, each plan what the flows call (:func:`metagan.lifecycle.fleet.plan_night`,
with the night's record written; for the hour, as the hourly flow and ``bench/fleet.py``:
:func:`metagan.lifecycle.fleet.check_adaptation_identity` then :func:`metagan.lifecycle.fleet.pending_adaptation`):

- **1% changed**: 1% of the fleet due tonight and 1% with new uploads (the plan's result grows
  with the fleet: 10 rows at 1,000, 10,000 at 1,000,000);
- **100 changed**: 100 customers due and 100 with new uploads, whatever the fleet's size (what
  finding the work costs, apart from reading the work found).

``bench/fleet.py`` measures the same plans on fleets of registered models (up to 10,000: each
customer there is a real version in MLflow); this one takes the fleet to the million the index is
for, which registering would take days to build on this box.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metagan.config import load_params  # noqa: E402
from metagan.fleet_index import CustomerRow, FleetIndex, open_index  # noqa: E402

DAY = 86_400.0


def fill(index: FleetIndex, customers: int, now: float, batch: int = 20_000) -> None:
    """``customers`` rows, none due: drawn last night, due tomorrow, adapted from their uploads."""
    for start in range(0, customers, batch):
        index.put([CustomerRow(f"c{i:07d}", production_version="3", model_uri=f"s3://bucket/m/{i}/model.onnx",
                               model_sha256="0" * 64, batch_version="3", batch_at=now - DAY / 2,
                               due_at=now + DAY / 2, every_s=None, uploads_sig="sig", uploads_hash="h",
                               adapted_hash="h", adapt_since=None, updated_at=now)
                   for i in range(start, min(start + batch, customers))])


def mark(index: FleetIndex, customers: int, changed: int, now: float) -> list[str]:
    """``changed`` customers, spread over the fleet, due now and with new uploads."""
    step = max(1, customers // changed)
    ids = [f"c{i:07d}" for i in range(0, customers, step)][:changed]
    index.put([CustomerRow(cid, production_version="4", model_uri=f"s3://bucket/m/{cid}/model.onnx",
                           model_sha256="1" * 64, batch_version="3", batch_at=now - DAY / 2, due_at=now - 60,
                           every_s=None, uploads_sig="sig2", uploads_hash="h2", adapted_hash="h",
                           adapt_since=now - 60, updated_at=now) for cid in ids])
    return ids


def unmark(index: FleetIndex, ids: list[str], now: float) -> None:
    index.put([CustomerRow(cid, production_version="3", model_uri=f"s3://bucket/m/{cid}/model.onnx",
                           model_sha256="0" * 64, batch_version="3", batch_at=now - DAY / 2, due_at=now + DAY / 2,
                           every_s=None, uploads_sig="sig", uploads_hash="h", adapted_hash="h", adapt_since=None,
                           updated_at=now) for cid in ids])


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def plan_hour(fleet, params) -> list[str]:
    """The hour's plan from the index, as the hourly flow makes it (and ``bench/fleet.py`` times it):
    a new meta-model or new settings would mark every customer, then the customers pending."""
    fleet.check_adaptation_identity(params, "1")
    return fleet.pending_adaptation(params)


def measure(index: FleetIndex, params, customers: int, repeats: int) -> dict:
    from metagan.lifecycle import fleet

    now = time.time()
    start = time.perf_counter()
    fill(index, customers, now)
    out = {"customers": customers, "fill_s": round(time.perf_counter() - start, 1)}
    if index.postgres:  # what autovacuum would do after a bulk load: the planner's statistics
        index.db.execute("analyze", "ANALYZE metagan_fleet")
    for shape, changed in (("1%", max(1, customers // 100)), ("100", 100)):
        ids = mark(index, customers, changed, now)
        night_s, plan = timed(lambda: fleet.plan_night(params, now=now), repeats)
        hour_s, pending = timed(lambda: plan_hour(fleet, params), repeats)
        assert len(plan.due) == changed and len(pending) == changed, (len(plan.due), len(pending), changed)
        out[shape] = {"changed": changed, "night_ms": round(night_s * 1000, 3), "hour_ms": round(hour_s * 1000, 3)}
        unmark(index, ids, now)
    return out


def run(profile: str, url: str, sizes: list[int], repeats: int) -> list[dict]:
    from metagan.lifecycle.fleet_repair import BUILT

    params = load_params(ROOT / "params.yaml")
    rows = []
    for n in sizes:
        index = open_index(url)
        index.db.execute("empty the index", "DELETE FROM metagan_fleet")
        index.set_state(BUILT, {"at": time.time()})  # filled here, not from a registry
        index.set_state("night", {"started": 0, "finished": True, "due": 0})
        rows.append(measure(index, params, n, repeats))
        print(json.dumps({profile: rows[-1]}), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", default="1000,10000,100000,1000000")
    ap.add_argument("--profiles", default="embedded,scaleout")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--report")
    args = ap.parse_args()
    sizes = [int(n) for n in args.customers.split(",")]
    report = {"machine": platform.platform(), "cpus": os.cpu_count(), "date": str(date.today()),
              "command": " ".join(["python"] + sys.argv), "load_start": list(os.getloadavg())}
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="plan-scaling-")))
        for profile in args.profiles.split(","):
            if profile == "embedded":
                os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow' / 'mlflow.db'}"
                os.environ.pop("METAGAN_INDEX_URL", None)
                (work / "mlflow").mkdir(exist_ok=True)
                url = f"sqlite:///{work / 'mlflow' / 'fleet.db'}"
            else:
                from tests.servers import Postgres

                pg = Postgres(work / "pg")
                stack.callback(pg.cleanup)
                stack.callback(pg.stop)
                pg.start()
                pg.create_database("mlflow")
                url = f"postgresql://{pg.user}@127.0.0.1:{pg.port}/mlflow"
                os.environ["METAGAN_INDEX_URL"] = url
            report[profile] = run(profile, url, sizes, args.repeats)
            for shape in ("1%", "100"):
                first, last = report[profile][0][shape], report[profile][-1][shape]
                report[profile + "_ratio_" + shape] = {
                    k: round(last[k] / first[k], 2) for k in ("night_ms", "hour_ms") if first[k] > 0}
    report["load_end"] = list(os.getloadavg())
    text = json.dumps(report, indent=1)
    print(text)
    if args.report:
        Path(args.report).write_text(text + "\n")


if __name__ == "__main__":
    main()
