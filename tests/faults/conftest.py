from pathlib import Path

from PIL import Image

from metagan.config import Params
from tests.conftest import make_dataset


def tiny_customer_project(root: Path, customer: str) -> Params:
    """A tiny meta checkpoint at ``root/meta.pt``, ``customer`` ingested under ``root/data``, and
    the params that point at them (no evaluator)."""
    from metagan.customers import ingest_customer
    from metagan.train import meta_train

    ds = make_dataset(size=16)
    params = Params().with_overrides(
        data={"val_groups": ["g3"]}, model={"preset": "tiny"},
        meta={"meta_batch": 2, "shots": 3, "queries": 2, "max_steps": 1}, adapt={"steps": 2},
        paths={"meta_checkpoint": str(root / "meta.pt"), "customers_dir": str(root / "models"),
               "ingested_customers": str(root / "data"), "evaluator": str(root / "none.pt")})
    meta_train(params, ds, root / "meta.pt")
    folder = root / "uploads" / customer
    folder.mkdir(parents=True)
    for j, idx in enumerate(ds.indices_of(0)[:3]):
        Image.fromarray(ds.images[idx, :, :, 0]).save(folder / f"{j}.png")
    assert ingest_customer(folder, root / "data", 16, 1, 1, 20, 10**7).ok
    return params
