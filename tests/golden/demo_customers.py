"""Golden outputs of the demo customers: what a refactor must leave bit for bit unchanged.

Each customer of ``metagan/sample_data/customers/`` is ingested as ``metagan ingest`` does, adapted from the
shipped meta-model ``metagan/pretrained/condgan-small.pt`` with seed 0 and the project's
params.yaml, exported to ONNX, parity-checked and scored as ``metagan adapt`` does. Recorded per
customer: the sha256 of the ONNX model's output for fixed noise (onnxruntime, one thread), of the
generator's weights and of the contact sheet, and the metrics as float64.

``python -m tests.golden.demo_customers`` rewrites ``demo_customers.npz``; do that only for a change
that is *meant* to change the models (a new generator), measured and recorded as such.
``tests/golden/test_golden.py`` recomputes the values and compares.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from metagan.config import PACKAGE_DIR, SHIPPED_META_MODEL, load_params

SHIPPED_META = SHIPPED_META_MODEL
CUSTOMERS = PACKAGE_DIR / "sample_data" / "customers"  # examples/customers/ when the values were recorded
GOLDEN = Path(__file__).with_name("demo_customers.npz")
NOISE = 16  # images from noise(NOISE, z_dim, seed 0)


def _sha(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _state_sha(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def demo_customer_outputs(work: Path) -> dict[str, dict]:
    """customer id -> {"onnx_output": sha, "weights": sha, "contact_sheet": sha, metrics...}, made by
    the production path (:func:`metagan.customer_model.adapt_customer`, as ``metagan adapt`` runs it).
    (At 445612f, where the values were recorded, the same steps were spread over ``adapt.adapt_customer``
    and ``flows.adapt_customers.adapt_one``.)"""
    from metagan.adapt import MetaModel
    from metagan.customer_model import adapt_customer, load_gate_evaluator
    from metagan.customers import ingest_customer, load_ingested
    from metagan.export import noise, onnx_session

    torch.set_num_threads(1)
    params = load_params().with_overrides(meta={"init_checkpoint": str(SHIPPED_META), "minutes": 0.0},
                                          paths={"customers_dir": str(work / "models")})
    meta = MetaModel.load(SHIPPED_META)
    evaluator = load_gate_evaluator(params)
    out: dict[str, dict] = {}
    for folder in sorted(p for p in CUSTOMERS.iterdir() if p.is_dir()):
        a = params.adapt
        ingested = ingest_customer(folder, work / "data", params.data.image_size, params.data.channels, a.min_shots,
                                   a.max_shots, a.max_image_pixels)
        assert ingested.ok
        assert np.array_equal(ingested.uploads.images, load_ingested(work / "data", folder.name).images)
        model = adapt_customer(meta, ingested.uploads, params, evaluator, seed=0)
        session = onnx_session(model.onnx_path, threads=1)
        (images,) = session.run(None, {"z": noise(NOISE, session.get_inputs()[0].shape[1], 0)})
        out[folder.name] = {"onnx_output": _sha(images), "weights": _state_sha(model.generator),
                            "contact_sheet": hashlib.sha256(model.contact_sheet.read_bytes()).hexdigest(),
                            **{k: float(v) for k, v in model.metrics.items()}}
    return out


def save(values: dict[str, dict], path: Path = GOLDEN) -> None:
    flat = {f"{cid}/{k}": np.array(v) for cid, d in values.items() for k, v in d.items()}
    np.savez(path, **flat)


def load(path: Path = GOLDEN) -> dict[str, dict]:
    out: dict[str, dict] = {}
    with np.load(path, allow_pickle=False) as npz:
        for key in npz.files:
            cid, name = key.split("/", 1)
            v = npz[key]
            out.setdefault(cid, {})[name] = str(v) if v.dtype.kind == "U" else float(v)
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        values = demo_customer_outputs(Path(tmp))
    for cid, d in values.items():
        print(cid, d)
    save(values, Path(sys.argv[1]) if len(sys.argv) > 1 else GOLDEN)
