"""Meta-training: checkpoints as data, held-out groups, resuming, loading old and foreign files."""

import pytest
import torch

from metagan.adapt import MetaModel, NoMetaCheckpoint
from metagan.checkpoint import CheckpointError, META_FORMAT, load_checkpoint
from metagan.errors import ConfigError
from metagan.train import meta_train


def test_checkpoint_is_state_dicts_plus_config_and_loads_weights_only(meta_ckpt):
    ckpt = load_checkpoint(meta_ckpt, META_FORMAT)  # weights_only=True inside
    assert ckpt["method"] == "condgan" and ckpt["step"] == 3
    assert ckpt["params"]["model"]["preset"] == "tiny"
    assert ckpt["train_groups"] == ["g0", "g1", "g2"]  # the held-out group never trained on
    assert isinstance(ckpt["state"]["generator"]["fc.weight"], torch.Tensor)



def test_tune_groups_are_held_out_and_absent_ones_are_ignored(tiny_params, tiny_dataset, tmp_path):
    params = tiny_params.with_overrides(data={"tune_groups": ["g2", "not-in-this-dataset"]})
    result = meta_train(params, tiny_dataset, tmp_path / "tuned.pt")
    assert load_checkpoint(result.checkpoint, META_FORMAT)["train_groups"] == ["g0", "g1"]



def test_a_killed_meta_training_resumes_from_its_last_checkpoint(tiny_params, tiny_dataset, tmp_path):
    params = tiny_params.with_overrides(meta={"max_steps": 4, "sample_every": 3})
    path = tmp_path / "resume.pt"

    def crash(grid, step):
        raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        meta_train(params, tiny_dataset, path, on_samples=crash, checkpoint_every_s=0.0)
    assert load_checkpoint(path, META_FORMAT)["step"] == 2  # saved after steps 1 and 2, killed in step 3
    result = meta_train(params, tiny_dataset, path, resume=True)
    assert load_checkpoint(path, META_FORMAT)["step"] == 4 == result.steps
    other = params.with_overrides(meta={"seed": 1})  # a different config never resumes this file
    seen = []
    meta_train(other, tiny_dataset, path, resume=True, on_samples=lambda g, s: seen.append(s))
    assert seen[0] == 3  # trained from step 0, not continued from the other run's step 4



def test_raising_the_budget_of_a_finished_run_extends_it_instead_of_restarting(tiny_params, tiny_dataset, tmp_path):
    path = tmp_path / "long.pt"
    meta_train(tiny_params.with_overrides(meta={"max_steps": 3}), tiny_dataset, path)
    longer = tiny_params.with_overrides(meta={"max_steps": 5, "minutes": tiny_params.meta.minutes * 2})
    result = meta_train(longer, tiny_dataset, path, resume=True)
    assert result.steps == 5 and load_checkpoint(path, META_FORMAT)["params"]["meta"]["max_steps"] == 5


def test_serving_and_other_learners_settings_do_not_stop_a_run_from_resuming(tiny_params, tiny_dataset, tmp_path):
    path = tmp_path / "run.pt"
    meta_train(tiny_params.with_overrides(meta={"max_steps": 2}), tiny_dataset, path)
    other = "classic" if tiny_params.meta.method != "classic" else "warp"
    served_differently = tiny_params.with_overrides(
        meta={"max_steps": 3, "sample_every": 1}, adapt={"truncation": 0.5}, gate={"min_consistency": 0.1},
        learners={other: {"rotation": 0.01}})
    seen = []
    meta_train(served_differently, tiny_dataset, path, resume=True, on_samples=lambda g, s: seen.append(s))
    assert seen[0] == 3  # continued from step 2, not restarted



def test_meta_model_load_reports_missing_and_foreign_checkpoints(tmp_path):
    with pytest.raises(NoMetaCheckpoint):
        MetaModel.load(tmp_path / "missing.pt")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a"):
        MetaModel.load(tmp_path / "other.pt")



def test_a_checkpoint_naming_settings_this_version_lacks_still_loads(meta_ckpt, tmp_path, caplog):
    """A shipped model outlives the code that trained it: unknown keys in its params record are
    dropped with a warning (params.yaml itself stays strict)."""
    from metagan.checkpoint import save_atomic

    ckpt = torch.load(meta_ckpt, weights_only=True)
    ckpt["params"]["adapt"]["copy_limit"] = 0.0  # a setting a later version removed
    save_atomic(ckpt, tmp_path / "old.pt")
    meta = MetaModel.load(tmp_path / "old.pt")
    assert meta.params.adapt.steps == ckpt["params"]["adapt"]["steps"]
    assert "dropped adapt.copy_limit" in caplog.text
    ckpt["params"]["adapt"]["steps"] = "many"
    save_atomic(ckpt, tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match="adapt.steps"):
        MetaModel.load(tmp_path / "bad.pt")


def test_a_warm_start_from_another_methods_checkpoint_is_a_configuration_error(tiny_params, tiny_dataset, tmp_path):
    """`meta.init_checkpoint` of another method is the configuration's mistake (exit 3), naming
    what to set: a walkthrough found `metagan demo` with `meta.method: classic` ending as a bug."""
    from metagan.errors import ConfigError
    from metagan.errors import kind_of

    first = tmp_path / "first.pt"
    meta_train(tiny_params.with_overrides(meta={"max_steps": 1}), tiny_dataset, first)
    other = "condgan" if tiny_params.meta.method != "condgan" else "warp"
    with pytest.raises(ConfigError, match="a warm start continues the same method") as caught:
        meta_train(tiny_params.with_overrides(meta={"method": other, "max_steps": 1, "init_checkpoint": str(first)}),
                   tiny_dataset, tmp_path / "second.pt")
    assert kind_of(caught.value).exit_code == 3


@pytest.fixture
def registered_meta(tmp_path, monkeypatch):
    """A tiny meta-model trained on the packed sample tasks and registered (version 1) in a fresh
    embedded registry; returns its params and a copy of its checkpoint at ``tmp_path/old/meta.pt``
    (a warm start for the tests)."""
    import shutil

    from metagan.config import PROJECT_ROOT, Params
    from metagan.lifecycle.meta_model import train_meta_or_reuse
    from metagan.task_data import prepare_task_dataset
    from tests.conftest import make_tiny_params

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    params = make_tiny_params(tmp_path).with_overrides(
        data={"source": str(PROJECT_ROOT / Params().data.sample), "val_groups": [], "tune_groups": []},
        meta={"max_steps": 1}, paths={"meta_checkpoint": str(tmp_path / "artifacts" / "meta.pt")})
    prepare_task_dataset(params)
    assert train_meta_or_reuse(params, "d1").version == "1"
    (tmp_path / "old").mkdir()
    shutil.copy(tmp_path / "artifacts" / "meta.pt", tmp_path / "old" / "meta.pt")
    return params, tmp_path / "old" / "meta.pt"


def test_a_meta_model_registered_by_its_starts_path_is_found_after_the_start_moved(registered_meta, tmp_path):
    """Guarantee: a meta-model registered by an older metagan, whose identity named its warm
    start by path, is reused after that checkpoint moved (a reinstall: the shipped model in
    another environment): the path its run recorded holds no file any more, the file it names
    has the same name, and every other setting is the same. A probe's registry made before warm
    starts counted by content registered the meta-model again after the move (and every customer
    was then adapted again); another starting checkpoint is still another meta-model."""
    import shutil

    from metagan import model_versions
    from metagan.data.shards import packed_version
    from metagan.lifecycle.meta_model import train_meta_or_reuse
    from metagan.lifecycle.registry import meta_identity
    from metagan.model_names import META_MODEL

    params, old = registered_meta
    at_old = params.with_overrides(meta={"init_checkpoint": str(old), "minutes": 0.0})
    assert train_meta_or_reuse(at_old, "d2").version == "2"
    legacy = meta_identity(at_old, packed_version(params.resolve(params.data.packed_dir)), by_path=True)
    model_versions.set_version_tags(META_MODEL, "2", legacy)  # as the older metagan registered it
    (tmp_path / "new").mkdir()
    shutil.move(old, tmp_path / "new" / "meta.pt")
    at_new = params.with_overrides(meta={"init_checkpoint": str(tmp_path / "new" / "meta.pt"), "minutes": 0.0})
    again = train_meta_or_reuse(at_new, "d3")
    assert (again.version, again.reused) == ("2", True)
    shutil.copy(tmp_path / "new" / "meta.pt", tmp_path / "new" / "other.pt")
    with open(tmp_path / "new" / "other.pt", "ab") as f:
        f.write(b"\0")  # another file: another start
    other = train_meta_or_reuse(at_new.with_overrides(meta={"init_checkpoint": str(tmp_path / "new" / "other.pt")}),
                                "d4")
    assert (other.version, other.reused) == ("3", False)


def test_a_meta_model_an_earlier_metagan_registered_by_its_data_version_is_reused(registered_meta):
    """Guarantee: a meta-model registered by a metagan of before 2026-12-06, whose identity named
    the data by the DVC version of the data folder (no packed tasks' version) and its warm start
    by path, is reused by the first meta-model step after the upgrade when the data version and
    every setting are the same, and tagged with the tasks' version, so that it is still found
    after the data folder moves with an upload. An upgrade probe (2026-12-07) saw the same weights
    registered again and every customer adapted, promoted and drawn again. Another data version is
    another model, as it was for that metagan."""
    from metagan import model_versions, store
    from metagan.data.shards import packed_version
    from metagan.lifecycle.meta_model import train_meta_or_reuse
    from metagan.lifecycle.registry import meta_identity
    from metagan.model_names import META_MODEL

    params, old = registered_meta
    tasks = packed_version(params.resolve(params.data.packed_dir))
    warm = params.with_overrides(meta={"init_checkpoint": str(old), "minutes": 0.0})
    assert train_meta_or_reuse(warm, "d2").version == "2"

    def as_registered_then(version: str, params_then) -> None:
        store.client().delete_model_version_tag(META_MODEL, version, "tasks_version")
        model_versions.set_version_tags(META_MODEL, version, {
            "params_hash": meta_identity(params_then, tasks, by_path=True)["params_hash"]})

    as_registered_then("2", warm)
    again = train_meta_or_reuse(warm, "d2")
    assert (again.version, again.reused) == ("2", True)
    assert model_versions.get_version(META_MODEL, "2").tags["tasks_version"] == tasks
    after_upload = train_meta_or_reuse(warm, "d9")  # the data folder's version moved with an upload
    assert (after_upload.version, after_upload.reused) == ("2", True)
    as_registered_then("1", params)  # no warm start
    cold = train_meta_or_reuse(params, "d1")
    assert (cold.version, cold.reused) == ("1", True)
    as_registered_then("1", params)
    other = train_meta_or_reuse(params, "d5")  # not the data that model was registered from
    assert (other.version, other.reused) == ("3", False)


def test_an_earlier_metagans_meta_model_is_found_by_the_tasks_its_data_version_held(registered_meta, tmp_path):
    """Guarantee: a meta-model a metagan of before 2026-12-06 registered (its data named by the data
    folder's DVC version) is reused after uploads moved that version, where DVC's local cache still
    holds the manifest of the tasks that version held and it names today's tasks: an upgraded
    project whose customers changed since its meta-model was registered kept it (the upgrade
    probe's project adapted every customer again)."""
    import shutil

    from metagan import model_versions, store, versioning
    from metagan.data.shards import packed_version
    from metagan.lifecycle.meta_model import train_meta_or_reuse
    from metagan.lifecycle.registry import meta_identity
    from metagan.model_names import META_MODEL

    params, old = registered_meta
    project, data = tmp_path / "project", tmp_path / "project" / "data"
    shutil.copytree(params.resolve(params.data.packed_dir), data / "tasks")
    here = params.with_overrides(data={"packed_dir": str(data / "tasks")}, paths={"data_root": str(data)},
                                 meta={"init_checkpoint": str(old), "minutes": 0.0})
    versioning.ensure_dvc_repo(project, str(tmp_path / "remote"))
    then = versioning.track(project)
    assert train_meta_or_reuse(here, then).version == "2"
    tasks = packed_version(data / "tasks")
    store.client().delete_model_version_tag(META_MODEL, "2", "tasks_version")  # as that metagan registered it
    model_versions.set_version_tags(META_MODEL, "2", {"params_hash": meta_identity(here, tasks, by_path=True)[
        "params_hash"]})
    (data / "customers" / "acme").mkdir(parents=True)
    (data / "customers" / "acme" / "shots.npz").write_bytes(b"a customer's upload")
    now = versioning.track(project)
    assert now != then
    again = train_meta_or_reuse(here, now)
    assert (again.version, again.reused) == ("2", True)
    assert model_versions.get_version(META_MODEL, "2").tags["tasks_version"] == tasks


def test_a_warm_start_read_once_identifies_and_starts_the_meta_model_without_its_file(registered_meta):
    """Guarantee: the warm start as `check_warm_start` read it is all meta-training needs: the
    meta-model's identity (the checksum of the bytes read) and its starting weights come from it,
    so the file can be gone after that one read; the same start read again is the same identity."""
    from metagan.checkpoint import META_FORMAT, load_checkpoint
    from metagan.lifecycle.meta_model import train_meta_or_reuse
    from metagan.meta import check_warm_start

    params, old = registered_meta
    warm = params.with_overrides(meta={"init_checkpoint": str(old), "minutes": 0.0})
    start = check_warm_start(warm)
    first_of_file = train_meta_or_reuse(warm, "d1")  # read here, once, when no caller read it
    assert (first_of_file.version, first_of_file.reused) == ("2", False)
    old.unlink()
    again = train_meta_or_reuse(warm, "d2", start=start)
    assert (again.version, again.reused) == ("2", True)
    trained = train_meta_or_reuse(warm.with_overrides(meta={"seed": 5}), "d3", start=start)  # another identity
    assert (trained.version, trained.reused) == ("3", False)
    saved = load_checkpoint(trained.checkpoint, META_FORMAT)

    def tensors(tree, at=()):
        if isinstance(tree, torch.Tensor):
            yield at, tree
        elif isinstance(tree, dict):
            for k, v in tree.items():
                yield from tensors(v, (*at, k))

    weights = dict(tensors(start.content["state"]))
    same = [torch.equal(weights[at], t) for at, t in tensors(saved["state"]) if at in weights]
    assert len(same) == len(weights) and all(same)
    assert saved["step"] == start.content["step"]  # minutes 0: started from the start's weights, no step taken


def test_a_reused_meta_model_whose_registered_checkpoint_is_damaged_is_refused(registered_meta, tmp_path):
    """Guarantee: meta-training that reuses a registered meta-model fetches its checkpoint only when
    the project's differs, and checks it against the `checkpoint_sha256` tag: a damaged registered
    file stops it as damaged state (exit 5) naming the version and both checksums, and leaves the
    project's own file as it was. It was put in place unchecked and made `current` again, so the
    customers were adapted from it; with the registered file restored, the reuse goes on."""
    import shutil

    from metagan import model_versions
    from metagan.addresses import file_uri_path
    from metagan.errors import Damaged, kind_of
    from metagan.files import sha256_file
    from metagan.lifecycle.meta_model import train_meta_or_reuse
    from metagan.model_names import META_MODEL

    params, good = registered_meta
    local = params.resolve(params.paths.meta_checkpoint)
    stored = file_uri_path(model_versions.get_version(META_MODEL, "1").source) / local.name
    data = stored.read_bytes()
    stored.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    local.write_bytes(b"a checkpoint of a run killed since")
    with pytest.raises(Damaged, match="metagan-meta version 1: .* registered, .* found") as caught:
        train_meta_or_reuse(params, "d2")
    assert kind_of(caught.value).exit_code == 5
    assert local.read_bytes() == b"a checkpoint of a run killed since"
    shutil.copy(good, stored)
    again = train_meta_or_reuse(params, "d2")
    assert (again.version, again.reused) == ("1", True) and sha256_file(local) == sha256_file(good)


def test_a_meta_model_registration_says_how_it_came_to_be():
    """`metagan meta-train` with meta.minutes 0 and a warm start registers the shipped model as it
    is: it said "(trained)" (a walkthrough of docs/DEPLOY.md, 2026-12-07)."""
    from pathlib import Path

    from metagan.lifecycle.meta_model import MetaRegistration

    made = [MetaRegistration("1", True, Path("c.pt"), "d"), MetaRegistration("2", False, Path("c.pt"), "d", 0),
            MetaRegistration("3", False, Path("c.pt"), "d", 1200)]
    assert [m.how for m in made] == ["reused", "registered as it is, 0 steps trained: meta.minutes 0",
                                     "trained 1200 steps"]


def test_a_warm_start_given_no_minutes_is_said_registered_as_it_is(registered_meta):
    """The steps a registration reports are its own, not its warm start's: the shipped model
    registered with meta.minutes 0 said "trained 24168 steps" where docs/DEPLOY.md promises
    "registered as it is, 0 steps trained" (an operator probe of 2026-12-08)."""
    from metagan.lifecycle.meta_model import train_meta_or_reuse

    params, start = registered_meta
    as_is = train_meta_or_reuse(params.with_overrides(meta={"init_checkpoint": str(start), "minutes": 0.0}), "d1")
    assert (as_is.reused, as_is.steps) == (False, 0)
    assert as_is.how == "registered as it is, 0 steps trained: meta.minutes 0"


def test_a_checkpoint_of_other_settings_is_said_replaced_from_the_warm_start_where_one_is_set(registered_meta,
                                                                                            caplog):
    """Guarantee: meta-training over a checkpoint of other settings says what it starts from: the
    warm start where `meta.init_checkpoint` is set (an upgrade probe of 2026-12-07 saw the demo's
    zero-minute registration of the shipped meta-model say "starts from scratch"), else scratch."""
    import logging

    from metagan.lifecycle.meta_model import train_meta_or_reuse

    params, old = registered_meta
    warm = params.with_overrides(meta={"init_checkpoint": str(old), "minutes": 0.0, "seed": 7})
    with caplog.at_level(logging.WARNING, logger="metagan.train"):
        train_meta_or_reuse(warm, "d2")
    [said] = [r.getMessage() for r in caplog.records if "other settings" in r.getMessage()]
    assert f"this training starts from meta.init_checkpoint ({old}) and replaces it" in said
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="metagan.train"):
        train_meta_or_reuse(params.with_overrides(meta={"seed": 8}), "d3")
    [said] = [r.getMessage() for r in caplog.records if "other settings" in r.getMessage()]
    assert "starts from scratch (meta.init_checkpoint starts from a meta-model instead)" in said
