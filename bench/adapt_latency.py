"""CPU adaptation latency: one customer, K shots, end to end (load, adapt, export ONNX, parity).

Reports a cold first customer (imports and exporter warm-up included, as a fresh process pays)
and the steady per-customer time of a running worker. Target: <= 5 s for 5 shots on 2 cores.

    python bench/adapt_latency.py --checkpoint metagan/pretrained/warp-small.pt --shots 5 --repeat 5
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from metagan.config import SHIPPED_META_MODEL  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(SHIPPED_META_MODEL))
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from metagan.adapt import MetaModel, adapt_to_customer
    from metagan.config import PROJECT_ROOT, load_params
    from metagan.export import check_parity, export_generator_onnx

    settings = load_params().adapt  # the project's fine-tuning settings, as the flows use them
    if args.steps is not None:
        settings = settings.model_copy(update={"steps": args.steps})

    sample = np.load(PROJECT_ROOT / "metagan/sample_data/omniglot_sample.npz")["images"]
    tmp = Path(tempfile.mkdtemp())
    rows = []
    for i in range(args.repeat):
        t = {"start": time.perf_counter()}
        meta = MetaModel.load(args.checkpoint, device=args.device)
        t["load"] = time.perf_counter()
        from metagan.data import preprocess_array

        shots = np.stack([preprocess_array(sample[140 + i, j], meta.image_size, meta.channels)
                          for j in range(args.shots)])
        g = adapt_to_customer(meta, shots, seed=i, settings=settings)
        t["adapt"] = time.perf_counter()
        path = export_generator_onnx(g, tmp / f"c{i}.onnx")
        t["export"] = time.perf_counter()
        diff = check_parity(g, path)
        t["parity"] = time.perf_counter()
        keys = list(t)
        rows.append({k: round(t[k] - t[p], 3) for p, k in zip(keys, keys[1:])} | {"parity_max_abs_diff": diff})
        rows[-1]["total"] = round(t["parity"] - t["start"], 3)
    first_incl_imports = rows[0]["total"] + (rows and (time.perf_counter() - T0) - sum(r["total"] for r in rows))
    steady = rows[1:] or rows
    report = {"machine": platform.platform(), "threads": torch.get_num_threads(), "shots": args.shots,
              "adapt": settings.model_dump(), "checkpoint": args.checkpoint, "per_customer": rows,
              "cold_first_customer_s_incl_imports": round(first_incl_imports, 2),
              "steady_median_s": float(np.median([r["total"] for r in steady]))}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
