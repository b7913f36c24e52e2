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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shots", type=int, default=5)
    args = ap.parse_args()

    import numpy as np
    import yaml
    from PIL import Image

    from tests.servers import MlflowServer, Postgres, PrefectServer, S3Server

    work = Path(tempfile.mkdtemp(prefix="metagan-dask-"))
    pg = Postgres(work).start()
    servers = [pg]
    try:
        for db in ("mlflow", "prefect"):
            pg.create_database(db)
        s3 = S3Server(work).start()
        servers.append(s3)
        s3.create_bucket("metagan")
        servers.append(MlflowServer(work, pg.url("mlflow"), "s3://metagan/mlflow", s3.client_env()).start())
        servers.append(PrefectServer(work, pg.url("prefect", "asyncpg")).start(timeout=180))
        os.environ.update(s3.client_env() | {"MLFLOW_TRACKING_URI": servers[2].uri,
                                             "PREFECT_API_URL": servers[3].api_url, "METAGAN_PROFILE": "scaleout",
                                             "PREFECT_LOGGING_LEVEL": "WARNING"})

        sample = np.load(ROOT / "metagan/sample_data/omniglot_sample.npz")["images"]
        uploads = work / "uploads"
        runs = {1: [f"w1-c{i:03d}" for i in range(args.customers)],
                args.workers: [f"w{args.workers}-c{i:03d}" for i in range(args.customers)]}
        for ids in runs.values():
            for i, cid in enumerate(ids):
                (uploads / cid).mkdir(parents=True)
                for j in range(args.shots):
                    Image.fromarray(sample[109 + i % 48, j].astype(np.uint8) * 255).save(uploads / cid / f"{j}.png")
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["data"].update(source=str(ROOT / params["data"]["sample"]), packed_dir=str(work / "data/tasks"))
        params["meta"].update(init_checkpoint=str(ROOT / "metagan/pretrained/condgan-small.pt"), minutes=0.0)
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
        data = ingest(str(uploads), p)
        meta = meta_train(p, data["data_version"])
        figures = {}
        for workers, ids in runs.items():
            params = load(p, {"scaleout": {"dask_workers": workers}})
            start = time.perf_counter()
            results = adapt_customers_flow(params)(p, meta["version"], data["data_version"], customers=ids,
                                                   overrides={"scaleout": {"dask_workers": workers}})
            wall = time.perf_counter() - start
            figures[workers] = {"wall_s": round(wall, 1), "ok": sum(r["ok"] for r in results),
                                "compute_s": round(sum(r.get("seconds", 0) for r in results), 1),
                                "processes": len({r.get("worker") for r in results})}
        print(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "date": str(date.today()),
                          "customers": args.customers, "runs": figures,
                          "speedup": round(figures[1]["wall_s"] / figures[args.workers]["wall_s"], 2)}, indent=2))
    finally:
        for server in reversed(servers):
            server.stop()
        pg.cleanup()


if __name__ == "__main__":
    main()
