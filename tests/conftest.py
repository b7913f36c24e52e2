import numpy as np
import pytest
import torch

from metagan.config import Params
from metagan.data import TaskDataset

torch.set_num_threads(1)  # CI has 2 cores; one thread per test process avoids oversubscription


@pytest.fixture(autouse=True)
def tracking_uri_kept():
    """MLflow's ``set_tracking_uri`` (which ``metagan.store.configure`` calls) also exports
    ``MLFLOW_TRACKING_URI`` for child processes: a test that configured the store in the source
    folder pointed every later test of the session at that registry (``metagan doctor`` in a test's
    own project checked the source folder's instead). The command's ``--project DIR`` exports
    ``METAGAN_PROJECT`` the same way: a test that ran `metagan --project` pointed every later
    test's settings at its project's params.yaml (a fresh clone's CI, 2026-12-07). Each test gets
    back the variables it found."""
    import os

    from metagan.config import PROJECT_ENV

    names = ("MLFLOW_TRACKING_URI", PROJECT_ENV)
    before = {name: os.environ.get(name) for name in names}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API for the whole session (starting one costs ~13 s), shared by
    tests/flows and the processes tests/faults starts (they get its URL as PREFECT_API_URL)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def tiny_params(tmp_path) -> Params:
    """Defaults shrunk to a tiny model writing under tmp_path."""
    return make_tiny_params(tmp_path)


def make_tiny_params(tmp_path) -> Params:
    return Params().with_overrides(
        data={"val_groups": ["g3"], "packed_dir": str(tmp_path / "tasks")},
        model={"preset": "tiny"},
        meta={"meta_batch": 2, "shots": 3, "queries": 2, "minutes": 1.0, "max_steps": 3,
              "sample_every": 2},
        adapt={"steps": 3},
        paths={"meta_checkpoint": str(tmp_path / "meta.pt"), "customers_dir": str(tmp_path / "customers")},
    )


def make_dataset(classes_per_group: int = 3, groups: int = 4, per_class: int = 6, size: int = 16) -> TaskDataset:
    """Synthetic task dataset: each class a bar at its own position, white background."""
    rng = np.random.default_rng(0)
    images, labels, names, group_names = [], [], [], []
    for g in range(groups):
        for c in range(classes_per_group):
            cid = len(names)
            names.append(f"g{g}/c{c}")
            group_names.append(f"g{g}")
            for _ in range(per_class):
                img = np.full((size, size, 1), 255, np.uint8)
                col = (cid * 3) % (size - 2)
                img[2 : size - 2, col : col + 2] = rng.integers(0, 60)
                images.append(img)
                labels.append(cid)
    return TaskDataset(np.stack(images), np.array(labels, np.int64), names, group_names, manifest={})


@pytest.fixture
def tiny_dataset() -> TaskDataset:
    return make_dataset()


@pytest.fixture
def meta_ckpt(tiny_params, tiny_dataset, tmp_path):
    """A tiny condgan meta checkpoint (3 steps), trained here: the learner whose fine-tuning the
    adaptation tests exercise (warp has its own tests, tests/test_warp.py)."""
    from metagan.train import meta_train

    grids = []
    result = meta_train(tiny_params.with_overrides(meta={"method": "condgan"}), tiny_dataset, tmp_path / "meta.pt", on_samples=lambda g, s: grids.append(g))
    assert result.steps == 3 and grids and grids[0].dtype == np.uint8
    return result.checkpoint


@pytest.fixture
def clean_process():
    """flows.app.cli.main() sets the process up (environment, the console log handler): undo it after each test."""
    import logging
    import os

    from flows.console import Console

    env = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(env)
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, Console)]:
        root.removeHandler(h)
