"""ONNX exports beside other torch work in one process, as on a Dask worker's or the flow's threads.

One thread exports the shipped meta-model's generator afresh (no graph template) for shot counts 1
to ``--exports``, each followed by a forward pass of its own (its parity check); another thread meanwhile runs what the rest of a customer's adaptation runs in
torch: forward passes of those generators, and, with ``--seeding``, torch.manual_seed before each.
Counts the failures of each side. ``--without-lock`` drops :data:`metagan.torch_export_lock.TORCH_EXPORT`
(both sides run as the code before it did), to show what it prevents.

    python bench/export_race.py --report docs/results/export-race-2026-12-07.json
    python bench/export_race.py --without-lock --report docs/results/export-race-without-lock-2026-12-07.json
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import sys
import tempfile
import threading
import time
import traceback
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="export-race-")  # no stored graph: every export traces

import numpy as np  # noqa: E402
import torch  # noqa: E402

from metagan import export  # noqa: E402
from metagan.adapt import adapt_to_customer, load_meta_model  # noqa: E402
from metagan.config import SHIPPED_META_MODEL  # noqa: E402
from metagan.torch_export_lock import TORCH_EXPORT  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exports", type=int, default=20, help="shot counts 1..N, one fresh export each")
    ap.add_argument("--seeding", action=argparse.BooleanOptionalAction, default=True,
                    help="the other thread also seeds torch's global generator before each forward pass")
    ap.add_argument("--without-lock", action="store_true", help="as the code before the lock")
    ap.add_argument("--report", type=Path)
    args = ap.parse_args()

    meta = load_meta_model(ROOT / SHIPPED_META_MODEL)
    size = meta.image_size
    rng = np.random.default_rng(0)
    generators = [adapt_to_customer(meta, (rng.random((k, size, size, 1)) > 0.9).astype(np.uint8) * 255, steps=0)
                  for k in range(1, args.exports + 1)]
    alone = contextlib.nullcontext if args.without_lock else TORCH_EXPORT.exclusive
    beside = contextlib.nullcontext if args.without_lock else TORCH_EXPORT.shared

    stop, other_failures, passes = threading.Event(), [], [0]

    def other_customers_work() -> None:
        while not stop.is_set():
            generator = generators[passes[0] % len(generators)]
            passes[0] += 1
            try:
                with beside():
                    if args.seeding:
                        torch.manual_seed(passes[0])
                    with torch.no_grad():
                        generator(torch.randn(8, generator.z_dim))
            except Exception:  # noqa: BLE001 (counted, as a customer failure would be)
                other_failures.append(traceback.format_exc().strip().splitlines()[-1])

    worker = threading.Thread(target=other_customers_work)
    worker.start()
    export_failures, start = [], time.perf_counter()
    for generator in generators:
        try:
            with alone():
                export._dynamo_export(generator, 18)
            with beside(), torch.no_grad():  # this customer's own parity check, as adapt_customer runs it
                generator(torch.randn(8, generator.z_dim))
        except Exception as e:  # noqa: BLE001
            export_failures.append(repr(e.__cause__ or e)[:200])
    seconds = time.perf_counter() - start
    stop.set()
    worker.join()

    result = {
        "date": date.today().isoformat(), "machine": f"{platform.node()} ({os.cpu_count()} cores), torch {torch.__version__}",
        "lock": not args.without_lock, "seeding": args.seeding, "exports": len(generators),
        "export_failures": len(export_failures), "export_errors": collections.Counter(export_failures),
        "other_thread_passes": passes[0], "other_thread_failures": len(other_failures),
        "other_thread_errors": collections.Counter(other_failures), "seconds": round(seconds, 1),
    }
    print(json.dumps(result, indent=2))
    if args.report:
        args.report.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
