"""``metagan demo``: the whole pipeline on the bundled sample and the example customers."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from flows.common import check_profile
from metagan import store
from metagan.config import PACKAGE_DIR, SHIPPED_META_MODEL, Params, load_params
from metagan.contact_sheet import contact_sheet
from metagan.errors import BadInput, ExitCode
from metagan.uploads import rejection_summary

SHIPPED_META = SHIPPED_META_MODEL
EXAMPLE_CUSTOMERS = PACKAGE_DIR / "sample_data" / "customers"


def refuse_the_scaleout_profile(params: Params) -> None:
    """The demo is the embedded profile's: refused on scale-out before any other check or work."""
    if params.profile == "scaleout":
        # an operator probe of 2026-12-08 ran it beside a cluster's environment: the sample became the
        # task data in the shared DVC remote, its meta-model the fleet's `current` one, and the
        # example customers' models were promoted in the shared registry
        server = os.environ.get("MLFLOW_TRACKING_URI")
        raise BadInput("metagan demo runs on the embedded profile only: on scale-out it would make the bundled "
                       "sample the task data and the shipped meta-model `current` in the shared registry"
                       f"{f' ({server})' if server else ''}, and promote the example customers there. Run it in a folder "
                       "of its own with METAGAN_PROFILE=embedded; to serve a cluster's customers from the shipped "
                       "meta-model, register it as docs/DEPLOY.md, section 2, shows (meta.init_checkpoint, "
                       "meta.minutes 0)")


def demo_params(params_path: str | None, train_minutes: float) -> Params:
    """Bundled sample as the task source; the shipped meta-model as is, when it is there."""
    params = load_params(params_path)
    refuse_the_scaleout_profile(params)
    meta = {"init_checkpoint": str(SHIPPED_META), "minutes": 0.0} if SHIPPED_META.exists() \
        else {"minutes": train_minutes}
    # loose PNGs: the demo shows the images themselves
    params = params.with_overrides(data={"source": params.data.sample}, meta=meta, fleet={"batch_format": "png"})
    check_profile(params)
    return params


def _as_hwc(a: np.ndarray) -> np.ndarray:
    return a[..., None] if a.ndim == 2 else a


def run_demo(params_path: str | None, customers: Path, out: Path, train_minutes: float, echo=print) -> int:
    from flows.pipeline import pipeline

    start = time.monotonic()
    params = demo_params(params_path, train_minutes)
    how = "the shipped meta-model" if SHIPPED_META.exists() else f"{train_minutes:g} min of meta-training"
    echo(f"metagan demo: bundled Omniglot sample, customers in {customers}, {how}")
    result = pipeline(params, str(customers), count=32, out=str(out))
    echo("")
    echo(f"done in {time.monotonic() - start:.0f} s; data version {result.data.data_version}, "
         f"metagan-meta v{result.meta.version}")
    for error in result.data.rejected.values():
        echo(f"  rejected: {error}")
    for cid, files in result.data.left_out.items():  # as adapt says them: served, but not from every file
        echo(f"  {cid}: {len(files)} upload(s) left out: {rejection_summary(files)}")
    for cid, files in result.data.converted.items():  # and from converted uploads
        echo(f"  {cid}: {len(files)} upload(s) converted: {rejection_summary(files)}")
    for a in result.adapted:
        if not a.ok:
            echo(f"  {a.customer_id}: adaptation failed: {a.error}")
    for p in result.promoted:
        if not p.serving and p.version is not None:  # refused, held back, or a later run's is the candidate
            echo(f"  {p.customer_id}: v{p.version} {p.outcome.value if p.held else 'not promoted'}: {p.reason}")
    shots = {u.customer_id: u.images for u in result.data.accepted}
    for b in result.generated:
        cid = b.customer_id
        if not b.ok:
            echo(f"  {cid}: no images: {b.error}")
            continue
        folder = out / cid
        generated = np.stack([_as_hwc(np.asarray(Image.open(folder / f))) for f in b.files])
        sheet = contact_sheet(shots[cid], generated, out / f"{cid}-contact-sheet.png")
        echo(f"  {cid}: {b.count} images in {folder} (model v{b.version}); contact sheet {sheet}")
    bin_dir = Path(sys.executable).parent  # the environment metagan runs in (.venv/bin in a checkout)
    echo("")
    echo(f"Look at the runs and the model registry:   {bin_dir / 'mlflow'} ui --backend-store-uri "
         f"{store.tracking_uri()}")
    echo(f"Look at the flow runs (start it first):    {bin_dir / 'prefect'} server start")
    echo(f"List models, versions and aliases:         {bin_dir / 'metagan'} models")
    echo(f"Preview a candidate before promoting it:   {bin_dir / 'metagan'} generate --customer ID --alias candidate")
    return ExitCode.PARTIAL if result.partial else ExitCode.OK  # as `metagan pipeline`
