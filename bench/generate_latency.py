"""``metagan generate`` as a user runs it: wall time of the whole command (Python start-up and
imports included) for 64 images of one customer, in a project whose registry holds ``--customers``
customers, and where that time goes.

The customer model is real: a demo customer adapted from the shipped meta-model (its served
size), logged once and registered as the production version of every customer. Each call is a
fresh process, as from a shell; the breakdown runs the same steps in a fresh process with a clock
between them (imports, registry read and checksum, drawing, writing the PNGs, contact sheet,
gallery and manifest).

    python bench/generate_latency.py --customers 120 --calls 5      # nice -n -5 when you can
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from metagan.config import SHIPPED_META_MODEL

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BREAKDOWN = """
import time; t0 = time.perf_counter()
import flows.app.cli, flows.progress, metagan.lifecycle.registry, metagan.generate, metagan.onnx_runtime, onnxruntime, PIL.Image
t1 = time.perf_counter()
from metagan import model_names, serving
from metagan.config import load_params
params = load_params()
model = serving.served_model({customer!r})
t2 = time.perf_counter()
from metagan.onnx_runtime import sample_onnx
images = sample_onnx(model.onnx, {count})
t3 = time.perf_counter()
from metagan.generate import run_batch_job
run_batch_job(model.onnx, {count}, {out!r}, 0, model.describe())
t4 = time.perf_counter()
import json, sys
print(json.dumps({{"imports_s": t1 - t0, "settings_and_registry_s": t2 - t1, "draw_s": t3 - t2,
                   "draw_and_write_s": t4 - t3}}))
"""


def build_project(work: Path, customers: int) -> list[str]:
    """A project folder whose registry holds ``customers`` customers in production."""
    from metagan import model_names, model_versions, tracking
    from metagan.adapt import MetaModel
    from metagan.config import PACKAGE_DIR, load_params
    from metagan.customer_model import adapt_customer
    from metagan.customers import ingest_customer

    os.environ["METAGAN_PROJECT"] = str(work)
    params = load_params().with_overrides(paths={"customers_dir": str(work / "models")})
    a = params.adapt
    folder = PACKAGE_DIR / "sample_data" / "customers" / "hebrew-03"
    uploads = ingest_customer(folder, work / "data", params.data.image_size, params.data.channels, a.min_shots,
                              a.max_shots, a.max_image_pixels).uploads
    model = adapt_customer(MetaModel.load(SHIPPED_META_MODEL), uploads, params)
    ids = [f"c{i:05d}" for i in range(customers)]
    with tracking.start_run("generate-latency", {}) as run:
        first = model_versions.log_onnx_model(model.onnx_path, model_names.customer_model_name(ids[0]), {})
    from metagan.files import sha256_file

    tags = {"parity_ok": "true", "onnx_sha256": sha256_file(model.onnx_path)}
    for cid in ids:
        name = model_names.customer_model_name(cid)
        mv = first if cid == ids[0] else model_versions.register_version(name, first.source, run.info.run_id, tags,
                                                                   model_id=first.source.removeprefix("models:/"))
        model_versions.set_alias(name, model_names.PRODUCTION, mv.version)
    return ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=120)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--count", type=int, default=64)
    ap.add_argument("--report", help="write the figures as JSON here too")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="generate-latency-") as tmp:
        work = Path(tmp)
        ids = build_project(work, args.customers)
        customer = ids[len(ids) // 2]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))} | {
            "METAGAN_PROJECT": str(work), "PYTHONPATH": str(ROOT)}
        command = [str(Path(sys.executable).parent / "metagan"), "generate", "--customer", customer, "--count",
                   str(args.count), "--out", str(work / "out")]
        load_before = os.getloadavg()
        walls = []
        for _ in range(args.calls):
            start = time.perf_counter()
            subprocess.run(command, env=env, check=True, capture_output=True, cwd=work)
            walls.append(time.perf_counter() - start)
        parts = [json.loads(subprocess.run(
            [sys.executable, "-c", BREAKDOWN.format(customer=customer, count=args.count, out=str(work / "b" / customer))],
            env=env, check=True, capture_output=True, text=True, cwd=work).stdout) for _ in range(args.calls)]
    breakdown = {k: round(statistics.median(p[k] for p in parts), 3) for k in parts[0]}
    # the batch job draws again in a session of its own (warm by then), so "draw_and_write_s" minus
    # "draw_s" is not the writing's cost (it came out negative): both are reported as measured
    report = {"machine": platform.platform(), "cpus": os.cpu_count(), "date": str(date.today()),
              "load_average_before": [round(x, 2) for x in load_before], "customers": args.customers,
              "images": args.count, "wall_s": [round(w, 2) for w in walls],
              "median_wall_s": round(statistics.median(walls), 2), "breakdown_median_s": breakdown}
    print(json.dumps(report, indent=2))
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
