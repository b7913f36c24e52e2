"""Scale-out fan-out: adapt N customers with the Dask task runner on 1 worker, then on W workers,
against the loopback scale-out stack (PostgreSQL-backed MLflow and Prefect servers, moto S3),
started here with the same helpers as the integration tests. Default preset and adaptation steps;
the meta-model is the shipped one (no meta-training).

    python bench/dask_fanout.py --customers 12 --workers 2

Each worker count adapts its own set of customer ids (same shots), so neither run can reuse the
other's registered models.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from metagan.config import SHIPPED_META_MODEL

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shots", type=int, default=5)
    args = ap.parse_args()

    import yaml

    from tests.projects import write_uploads
    from tests.servers import scaleout_stack

    work = Path(tempfile.mkdtemp(prefix="metagan-dask-"))
    with scaleout_stack(work) as stack:
        os.environ.update(stack["env"] | {"PREFECT_LOGGING_LEVEL": "WARNING"})

        uploads = work / "uploads"
        runs = {1: [f"w1-c{i:03d}" for i in range(args.customers)],
                args.workers: [f"w{args.workers}-c{i:03d}" for i in range(args.customers)]}
        for ids in runs.values():  # characters of the held-out alphabets (Futurama, Hebrew)
            write_uploads(uploads, {cid: 109 + i % 48 for i, cid in enumerate(ids)}, args.shots, broken=False)
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["data"].update(source=str(ROOT / params["data"]["sample"]), packed_dir=str(work / "data/tasks"))
        params["meta"].update(init_checkpoint=str(SHIPPED_META_MODEL), minutes=0.0)
        params["paths"].update(data_root=str(work / "data"), ingested_customers=str(work / "data/customers"),
                               meta_checkpoint=str(work / "meta.pt"), customers_dir=str(work / "models"))
        params["scaleout"].update(dvc_remote="s3://metagan/dvc", generated="s3://metagan/generated")
        (work / "params.yaml").write_text(yaml.safe_dump(params))
        subprocess.run(["git", "init", "-q"], cwd=work, check=True)

        from flows.adapt_customers import adapt_customers_flow
        from flows.common import load
        from flows.ingest import ingest
        from flows.meta_train import meta_train

        p = str(work / "params.yaml")
        data = ingest(load(p), str(uploads))
        meta = meta_train(load(p), data.data_version)
        figures = {}
        for workers, ids in runs.items():
            params = load(p, {"scaleout": {"dask_workers": workers}})
            start = time.perf_counter()
            results = adapt_customers_flow(params)(params, meta.version, data.data_version,
                                                   [u for u in data.accepted if u.customer_id in ids])
            wall = time.perf_counter() - start
            figures[workers] = {"wall_s": round(wall, 1), "ok": sum(r.ok for r in results),
                                "compute_s": round(sum(r.seconds for r in results), 1),
                                "processes": len({r.worker for r in results})}
        print(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "date": str(date.today()),
                          "customers": args.customers, "runs": figures,
                          "speedup": round(figures[1]["wall_s"] / figures[args.workers]["wall_s"], 2)}, indent=2))


if __name__ == "__main__":
    main()
