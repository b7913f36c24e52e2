"""The demo: meta-model (trained briefly if missing) -> example customers -> ONNX -> PNGs + contact sheets."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from metagan.adapt import MetaModel, adapt_customer_folder
from metagan.config import Params
from metagan.contact_sheet import contact_sheet
from metagan.generate import generate_pngs
from metagan.export import sample_onnx
from metagan.task_data import prepare_task_dataset
from metagan.train import meta_train
from metagan.uploads import discover_customers, load_customer_uploads


def run_demo(params: Params, customers: Path, out: Path, train_minutes: float, count: int = 32,
             echo=print) -> dict[str, Path]:
    start = time.monotonic()
    ckpt = params.resolve(params.paths.meta_checkpoint)
    if not ckpt.exists():
        echo(f"[1/3] no meta-model at {ckpt}: meta-training {params.meta.method} for {train_minutes:g} min")
        dataset = prepare_task_dataset(params)
        meta_train(params.with_overrides(meta={"minutes": train_minutes}), dataset, ckpt)
    else:
        echo(f"[1/3] using the meta-model at {ckpt}")
    meta = MetaModel.load(ckpt)
    models = params.resolve(params.paths.customers_dir)
    sheets = {}
    echo(f"[2/3] adapting {customers} -> {models}")
    for folder in discover_customers(customers):
        r = adapt_customer_folder(meta, folder, models, params)
        echo(f"      {r.customer_id}: " + (f"ok, {r.shots} shots, {r.seconds:.1f} s, ONNX parity "
                                            f"{r.parity_max_abs_diff:.1e}" if r.ok else f"FAILED: {r.error}"))
        if not r.ok:
            continue
        generate_pngs(r.onnx_path, count, out / r.customer_id)
        uploads = load_customer_uploads(folder, meta.image_size, meta.channels)
        sheets[r.customer_id] = contact_sheet(uploads.images, sample_onnx(r.onnx_path, count),
                                              out / f"{r.customer_id}-contact-sheet.png")
    echo(f"[3/3] done in {time.monotonic() - start:.0f} s")
    echo(f"  generated images: {out}/<customer>/*.png")
    for cid, sheet in sheets.items():
        echo(f"  contact sheet ({cid}: uploads on top, generated below): {sheet}")
    return sheets
