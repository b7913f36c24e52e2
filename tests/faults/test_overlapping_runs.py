"""Overlapping runs on the embedded profile (SQLite registry, file locks): two `metagan adapt`
processes over the same project, started together."""

import pytest

from tests.overlap import check_outcome, run_together, write_overlap_uploads
from tests.projects import make_project


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project with a registered tiny meta-model and DVC set up, as after `metagan meta-train`."""
    from flows.common import load
    from metagan import versioning
    from metagan.lifecycle import meta_model
    from metagan.task_data import prepare_task_dataset

    (tmp_path / "project").mkdir()
    root = make_project(tmp_path / "project", {"unused": 145}, dvc_remote=str(tmp_path / "remote"))
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow/mlflow.db'}",
           "DVC_SITE_CACHE_DIR": str(root / ".dvc-site-cache")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    params = load(str(root / "params.yaml"))
    prepare_task_dataset(params)
    versioning.ensure_dvc_repo(root, params.storage.dvc_remote)
    meta_model.train_meta_or_reuse(params, "overlap-test")
    return root, env


def test_two_adapt_runs_started_together_leave_one_version_per_identity_and_consistent_aliases(project):
    """Guarantee: two `metagan adapt` processes started together both succeed; a customer with the
    same uploads in both ends with exactly one version, `candidate` = `production` = it and no
    `previous`; a customer id with different uploads in each run gets one version per run, each
    built from the uploads *that* run ingested (never the other run's, read back from the shared
    data folder), and `candidate`/`production` on the version of the uploads ingested last, the
    other run's never promoted after it (`previous`, if any, is the other: promoted before the
    last ingestion, then replaced)."""
    root, env = project
    folders = write_overlap_uploads(root)
    outs, wall = run_together(root / "params.yaml", folders, env, root)
    outcome = check_outcome(folders, outs)
    print(f"two overlapping adapt runs: {wall:.1f} s; {outcome}")


def test_a_new_data_version_with_the_same_tasks_reuses_the_meta_model(project):
    """Guarantee: the meta-model's identity is its task data and settings, not the DVC version of
    the data folder, which moves with every customer's upload: a run over a new data version with
    the same tasks reuses the registered meta-model (before, one new upload made `metagan pipeline`
    train and register it again, and adapt every customer again)."""
    from flows.common import load
    from metagan.lifecycle import meta_model

    root, _ = project
    params = load(str(root / "params.yaml"))
    again = meta_model.train_meta_or_reuse(params, "a-new-customer-uploaded")
    assert again.reused and again.version == "1"
    other = meta_model.train_meta_or_reuse(params.with_overrides(meta={"seed": 7}), "a-new-customer-uploaded")
    assert not other.reused and other.version == "2"


def test_two_runs_starting_a_meta_model_at_once_train_it_once(project):
    """Guarantee: two runs needing a meta-model that is not registered yet (two demos started
    together in a new project) train and register it once: the second waits for the first's lock,
    then reuses its model. A probe's two demos registered it twice, and one reported nothing."""
    from concurrent.futures import ThreadPoolExecutor

    from flows.common import load
    from metagan import model_versions
    from metagan.lifecycle import meta_model

    root, _ = project
    params = load(str(root / "params.yaml")).with_overrides(meta={"seed": 11})  # an identity not registered
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: meta_model.train_meta_or_reuse(params, "together"), range(2)))
    assert sorted(r.reused for r in runs) == [False, True] and runs[0].version == runs[1].version == "2"
    assert len(model_versions.search_versions("name = 'metagan-meta'")) == 2  # the fixture's and this one
