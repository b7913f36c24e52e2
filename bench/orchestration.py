"""Orchestration overhead of adapting N customers in one flow run: wall time of the
``adapt_customers`` flow minus the compute it ran (adapt + export + parity, as timed inside each
task), per customer. Runs in a throwaway folder with its own registry.

    python bench/orchestration.py --customers 50
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from metagan.config import SHIPPED_META_MODEL

import numpy as np
import yaml
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=50)
    ap.add_argument("--shots", type=int, default=5)
    args = ap.parse_args()

    from metagan.config import PROJECT_ROOT

    root = Path(tempfile.mkdtemp(prefix="metagan-orch-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    sample = np.load(PROJECT_ROOT / "metagan/sample_data/omniglot_sample.npz")["images"]
    uploads = root / "uploads"
    for i in range(args.customers):
        (uploads / f"c{i:03d}").mkdir(parents=True)
        for j in range(args.shots):
            Image.fromarray(sample[i % len(sample), j].astype(np.uint8) * 255).save(uploads / f"c{i:03d}" / f"{j}.png")
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["data"].update(source=str(PROJECT_ROOT / params["data"]["sample"]), packed_dir=str(root / "data/tasks"))
    params["meta"].update(init_checkpoint=str(SHIPPED_META_MODEL), minutes=0.0)
    params["paths"].update(data_root=str(root / "data"), ingested_customers=str(root / "data/customers"),
                           meta_checkpoint=str(root / "meta.pt"), customers_dir=str(root / "models"))
    params["storage"]["dvc_remote"] = str(root / "remote")
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    import subprocess

    subprocess.run(["git", "init", "-q"], cwd=root, check=True)

    from flows.adapt_customers import adapt_customers
    from flows.common import load
    from flows.ingest import ingest
    from flows.meta_train import meta_train

    p = load(str(root / "params.yaml"))
    data = ingest(p, str(uploads))
    meta = meta_train(p, data.data_version)
    start = time.perf_counter()
    results = adapt_customers(p, meta.version, data.data_version, data.accepted)
    wall = time.perf_counter() - start
    compute = sum(r.seconds for r in results)
    ok = sum(r.ok for r in results)
    print(json.dumps({"machine": platform.platform(), "customers": args.customers, "ok": ok,
                      "flow_wall_s": round(wall, 1), "compute_s": round(compute, 1),
                      "overhead_per_customer_s": round((wall - compute) / args.customers, 3),
                      "wall_per_customer_s": round(wall / args.customers, 3), "workdir": str(root)}, indent=2))


if __name__ == "__main__":
    main()
