"""``metagan adapt`` as a user runs it, for one customer and for ten: the wall time of the whole
command (start-up, Prefect's ephemeral API, ingestion, adaptation, ONNX export and parity, metrics,
registration) and the cost of each customer beyond the first.

A project folder is made once (the shipped meta-model registered by ``metagan meta-train`` with a
zero budget); each call adapts customers it has never seen (new ids, drawings of the demo's held-out
alphabets), so nothing is reused from the registry. Calls alternate 1, 10, 1, 10 ... so a drifting
machine load affects both sizes alike.

    python bench/adapt_scaling.py --calls 3 --out docs/results/adapt-scaling-2026-12-05.json
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

import numpy as np
import yaml
from PIL import Image

from metagan.config import PROJECT_ROOT, SHIPPED_META_MODEL

HELD_OUT_CHARS = range(120, 150)  # Futurama and Hebrew characters of the bundled sample


def metagan(project: Path, *args: str) -> float:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "flows.app.cli", "--project", str(project), "-q", *args],
                          capture_output=True, text=True, cwd=PROJECT_ROOT)
    if done.returncode not in (0, 1):
        raise SystemExit(f"metagan {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return time.monotonic() - start


def write_customers(folder: Path, names: list[str], rng: np.random.Generator) -> Path:
    sample = np.load(PROJECT_ROOT / "metagan/sample_data/omniglot_sample.npz")["images"]
    for name in names:
        (folder / name).mkdir(parents=True)
        char = int(rng.choice(list(HELD_OUT_CHARS)))
        for j in rng.choice(20, 5, replace=False):
            Image.fromarray(sample[char, j].astype(np.uint8) * 255).save(folder / name / f"{j}.png")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=3, help="calls of each size")
    ap.add_argument("--many", type=int, default=10)
    ap.add_argument("--out", help="write the JSON report here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="adapt-scaling-"))
    project = work / "project"
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    params = {"meta": {"init_checkpoint": str(SHIPPED_META_MODEL), "minutes": 0.0},
              "data": {"source": str(PROJECT_ROOT / "metagan/sample_data/omniglot_sample.npz")}}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    rng = np.random.default_rng(0)
    print(f"meta-train (the shipped model, registered): {metagan(project, 'meta-train'):.1f} s", flush=True)
    times: dict[int, list[float]] = {1: [], args.many: []}
    for call in range(args.calls):
        for n in (1, args.many):
            folder = write_customers(work / f"uploads-{call}-{n}", [f"c{call}-{n}-{i}" for i in range(n)], rng)
            times[n].append(metagan(project, "adapt", "--customers", str(folder)))
            print(f"{n} customer(s): {times[n][-1]:.1f} s", flush=True)
    one, many = statistics.median(times[1]), statistics.median(times[args.many])
    report = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "load_average": os.getloadavg(), "meta_model": SHIPPED_META_MODEL.name, "calls": times,
              "median_one_s": one, f"median_{args.many}_s": many,
              "per_further_customer_s": (many - one) / (args.many - 1)}
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
