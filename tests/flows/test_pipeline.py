"""The whole pipeline under Prefect, on a tiny model, in a throwaway project folder."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from metagan.config import PROJECT_ROOT
from tests.projects import make_project


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_harness):
    root = tmp_path_factory.mktemp("project")
    make_project(root, {"alpha": 140, "beta": 120}, dvc_remote=str(root.parent / f"{root.name}-remote"))
    customers = root / "uploads"
    # a customer whose uploads are colour photos of noise: refused by the domain check, never adapted
    (customers / "photos").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(customers / "photos" / f"{i}.png")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow/mlflow.db'}")
    mp.setenv("DVC_SITE_CACHE_DIR", str(root / ".dvc-site-cache"))
    yield root, customers
    mp.undo()


def params_of(root):
    from flows.common import load

    return load(str(root / "params.yaml"))


@pytest.fixture(scope="module")
def first_run(project):
    from flows.pipeline import pipeline

    root, customers = project
    return pipeline(params_of(root), str(customers), count=5, seed=3)


def versions(name):
    from metagan import store

    return sorted(int(v.version) for v in store.client().search_model_versions(f"name='{name}'"))


def test_pipeline_registers_one_production_model_per_good_customer(project, first_run):
    from metagan import model_versions, versioning

    root, _ = project
    data_version = versioning.data_version(root)
    meta = model_versions.get_alias("metagan-meta", "current")
    assert meta.tags["data_version"] == data_version
    assert meta.tags["code_version"] and meta.tags["params_hash"]
    for cid in ("alpha", "beta"):
        name = f"metagan-customer-{cid}"
        prod = model_versions.get_alias(name, "production")
        assert versions(name) == [1]
        assert model_versions.get_alias(name, "candidate").version == prod.version
        assert prod.tags["meta_version"] == str(meta.version)  # lineage to the meta-model
        assert prod.tags["data_version"] == data_version
        assert prod.tags["parity_ok"] == "true" and prod.tags["gate"] == "passed"
        if (PROJECT_ROOT / "metagan/pretrained/evaluator.pt").exists():
            assert {"consistency", "copy_rate", "diversity"} <= set(prod.tags)
    assert model_versions.get_alias("metagan-evaluator", "current") is not None or not first_run.evaluator.registered
    assert "metagan-customer-broken" not in {m.name for m in model_versions.list_models()}
    assert "broken" in first_run.data.rejected["broken"]
    if (PROJECT_ROOT / "metagan/pretrained/evaluator.pt").exists():  # junk never reaches production
        assert "metagan-customer-photos" not in {m.name for m in model_versions.list_models()}
        assert "it looks like a photograph" in first_run.data.rejected["photos"]
    assert [p.outcome.value for p in first_run.promoted] == ["promoted", "promoted"]


def test_registered_onnx_model_runs_in_onnxruntime_and_matches_torch(project, first_run):
    """The production model is the customer's adapted generator: adapting the ingested shots again
    from the same meta-model (adaptation is deterministic in its seed) gives the same images in torch."""
    from metagan import serving
    from metagan.adapt import adapt_to_customer, load_meta_model
    from metagan.customers import load_ingested
    from metagan.export import noise, onnx_session
    from metagan.lifecycle.registry import meta_checkpoint

    root, _ = project
    params = params_of(root)
    session = onnx_session(serving.load_onnx_bytes("models:/metagan-customer-alpha@production"))
    z = noise(6, session.get_inputs()[0].shape[1], seed=0)
    (got,) = session.run(None, {"z": z})
    meta = load_meta_model(meta_checkpoint(params, first_run.meta.version))
    shots = load_ingested(params.resolve(params.paths.ingested_customers), "alpha").images
    generator = adapt_to_customer(meta, shots, settings=params.adapt)
    with torch.no_grad():
        expected = generator(torch.from_numpy(z))
    assert np.abs(got - expected.numpy()).max() < 1e-4


def test_data_is_versioned_and_clean(project, first_run):
    from metagan import versioning

    root, _ = project
    assert versioning.status_clean(root, cloud=True)
    assert (root / "data.dvc").exists()


def test_batch_job_wrote_images_and_manifest(project, first_run):
    root, _ = project
    manifest = json.loads((root / "out/alpha/manifest.json").read_text())
    assert manifest["count"] == 5 and manifest["seed"] == 3
    assert manifest["model"]["name"] == "metagan-customer-alpha" and manifest["model"]["version"]
    # one shard (fleet.batch_format's default): a PNG and a JSON per image, WebDataset's layout
    from metagan.shards import read_shard

    assert manifest["shard"] == "images.tar" and not list((root / "out/alpha").glob("0*.png"))
    samples = read_shard((root / "out/alpha/images.tar").read_bytes())
    assert [k for k, _, _ in samples] == ["00000", "00001", "00002", "00003", "00004"]
    assert (root / "out/alpha/contact-sheet.png").exists() and (root / "out/alpha/index.html").exists()
    size = params_of(root).data.image_size
    assert Image.open(io.BytesIO(samples[0][1])).size == (size, size)


def test_the_mlflow_ui_has_signatures_model_metrics_sample_images_and_the_batch(project, first_run):
    """What the MLflow UI shows: the ONNX model's signature, its metrics on the logged model and
    on the run that made it, the meta-training sample grids as images (key and step), and the batch job's
    manifest recorded against the version it drew from."""
    import mlflow

    from metagan import model_versions, store, tracking

    root, _ = project
    prod = model_versions.get_alias("metagan-customer-alpha", "production")
    info = mlflow.models.get_model_info(f"models:/metagan-customer-alpha/{prod.version}")
    assert info.signature is not None
    inputs = info.signature.inputs.to_dict()[0]["tensor-spec"]
    assert inputs["dtype"] == "float32" and inputs["shape"][0] == -1
    logged = mlflow.get_logged_model(info.model_id)
    assert "shot_coverage" in {m.key for m in logged.metrics}
    adapt_run = store.client().get_run(prod.run_id).data
    assert {"shot_coverage", "adapt_seconds", "shots"} <= set(adapt_run.metrics)
    assert logged.params == adapt_run.params and "adapt.steps" in adapt_run.params  # the settings it ran with
    meta_run = model_versions.get_alias("metagan-meta", "current").run_id
    images = [f.path for f in store.client().list_artifacts(meta_run, "images")]
    assert any("samples" in f for f in images), images
    assert prod.tags["last_batch"] == str(root / "out/alpha/manifest.json")
    # one generate run per task of the night, its customers' manifests in manifests.json
    runs = store.client().search_runs([tracking.experiment_id()], "tags.step = 'generate'")
    recorded = [m for r in runs for m in mlflow.artifacts.load_dict(f"runs:/{r.info.run_id}/manifests.json")]
    assert {"customer_id": "alpha", "model_version": str(prod.version), "count": 5} == \
        {k: v for k, v in next(m for m in recorded if m["customer_id"] == "alpha").items()
         if k in ("customer_id", "model_version", "count")}


def test_a_second_run_with_nothing_changed_creates_no_new_versions(project, first_run, monkeypatch):
    import flows.common
    import metagan.config
    from flows.pipeline import pipeline

    root, customers = project
    before = {n: versions(n) for n in ("metagan-meta", "metagan-customer-alpha", "metagan-customer-beta")}
    params = params_of(root)
    loads = []
    for module in (flows.common, metagan.config):  # the flows get the Params: none reads params.yaml again
        monkeypatch.setattr(module, "load_params", lambda *a, **k: loads.append(a))
    second = pipeline(params, str(customers), count=5, seed=3)
    assert loads == []
    assert second.meta.reused and all(r.reused for r in second.adapted)
    assert [p.outcome.value for p in second.promoted] == ["already production", "already production"]
    assert [b.model_name for b in second.generated] == ["metagan-customer-alpha", "metagan-customer-beta"]
    assert {n: versions(n) for n in before} == before


def test_rollback_needs_a_previous_version_and_then_swaps(project, first_run):
    from flows.promote import rollback
    from metagan import model_versions
    from metagan.lifecycle.production_moves import NoPreviousVersion

    root, _ = project
    params = params_of(root)
    with pytest.raises(NoPreviousVersion, match="no previous"):
        rollback(params, "alpha")
    name = "metagan-customer-alpha"
    prod = model_versions.get_alias(name, "production")
    # a second version of the same model as the previous one (production and previous on one
    # version is a move cut short, which rollback refuses when no record explains it)
    other = model_versions.register_version(name, prod.source, prod.run_id, dict(prod.tags),
                                            model_id=prod.source.removeprefix("models:/"))
    model_versions.set_alias(name, "previous", other.version)
    assert rollback(params, "alpha").version == str(other.version)
    assert str(model_versions.get_alias(name, "previous").version) == str(prod.version)


def test_a_worker_without_the_checkpoint_fetches_the_registered_meta_model(project, first_run, tmp_path):
    """A Dask worker on another machine has no meta checkpoint on disk: it adapts from the
    registered version's checkpoint, the same weights."""
    from metagan.adapt import load_meta_model
    from metagan.lifecycle.registry import meta_checkpoint

    root, _ = project
    params = params_of(root)
    elsewhere = params.with_overrides(paths={"meta_checkpoint": str(tmp_path / "not-here" / "checkpoint.pt")})
    local, fetched = (load_meta_model(meta_checkpoint(p, first_run.meta.version)) for p in (params, elsewhere))
    assert not (tmp_path / "not-here").exists()
    a, b = local.learner.modules()["generator"].state_dict(), fetched.learner.modules()["generator"].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("local_file", ["missing", "another model"])
def test_adapt_on_a_client_without_the_registered_checkpoint_adapts_from_the_registered_one(
        project, first_run, tmp_path, capsys, monkeypatch, local_file):
    """Guarantee: `metagan adapt` on a second client host (the project's settings; on its disk no
    checkpoint at `paths.meta_checkpoint`, or a file there that is another meta-model) adapts from
    the registered `current` meta-model. Refused until a probe of 2026-12-07: "no meta-trained
    checkpoint at ...", exit 3, though one was registered (the fan-out itself would have fetched
    it); a file of another meta-model was adapted from while the version was tagged with the
    registered one."""
    import shutil
    import tempfile

    import yaml

    from flows.app.cli import main
    from metagan import model_versions

    root, customers = project
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # this host's cache of fetched meta-models
    (tmp_path / "tmp").mkdir()
    here = tmp_path / "host2" / "checkpoint.pt"
    if local_file == "another model":
        here.parent.mkdir()
        here.write_bytes(b"not the registered meta-model")
    settings = yaml.safe_load((root / "params.yaml").read_text())
    settings["paths"]["meta_checkpoint"] = str(here)
    (tmp_path / "host2.yaml").write_text(yaml.safe_dump(settings))
    uploads = tmp_path / "uploads"
    cid = {"missing": "gamma", "another model": "delta"}[local_file]  # the project is the module's: one each
    shutil.copytree(customers / "alpha", uploads / cid)

    rc = main(["--project", str(root), "--params", str(tmp_path / "host2.yaml"), "adapt", "--customers", str(uploads)])
    out, err = capsys.readouterr()
    assert rc == 0, (out, err)
    assert f"{cid}: version 1 (new), production" in out
    meta = model_versions.get_alias("metagan-meta", "current")
    assert model_versions.get_alias(f"metagan-customer-{cid}", "production").tags["meta_version"] == str(meta.version)
    assert list((tmp_path / "tmp" / "metagan-meta-cache").rglob(here.name))  # fetched from the registry
    assert not here.exists() or here.read_bytes() == b"not the registered meta-model"  # this host's file untouched


def test_the_hourly_run_adapts_only_the_customers_whose_uploads_changed(project, first_run):
    """The hourly schedule (flows.hourly): with nothing changed it reads the upload folders' entries
    and the fleet index and stops; new uploads for one customer get that customer, and only it,
    ingested, adapted and promoted (the rejected folders are not read again either)."""
    import shutil

    from flows.hourly import adapt_changed
    from metagan import model_versions

    root, customers = project
    params = params_of(root)
    adapt_changed(params, str(customers))  # whatever earlier tests left: settled
    quiet = adapt_changed(params, str(customers))
    assert quiet.changed == [] and quiet.adapted == []
    before = {c: versions(f"metagan-customer-{c}") for c in ("alpha", "beta")}
    shutil.copy(customers / "beta" / "0.png", customers / "alpha" / "extra.png")  # a new upload for alpha
    hour = adapt_changed(params, str(customers))
    assert hour.changed == ["alpha"]
    assert [(a.customer_id, a.reused) for a in hour.adapted] == [("alpha", False)]
    assert [p.outcome.value for p in hour.promoted] == ["promoted"]
    assert versions("metagan-customer-alpha") == before["alpha"] + [max(before["alpha"]) + 1]
    assert versions("metagan-customer-beta") == before["beta"]
    prod = model_versions.get_alias("metagan-customer-alpha", "production")
    assert prod.tags["shots"] == "5"


def test_an_hour_killed_between_adapting_and_promoting_is_promoted_by_the_next(project, first_run, monkeypatch):
    """Guarantee: an hour's fan-out holds every customer it adapts until the last is done, then
    promotes them. One killed in between (a restart, the OOM killer) left each new candidate
    registered and the customer no longer pending, so no later hour promoted it until its uploads
    changed again, and `metagan doctor` saw nothing amiss (a probe of 2026-12-07). Now the index
    hears of an adaptation when its promotion is decided: the customer stays pending, the next hour
    finds the same version (reused, not adapted again) and promotes it, and doctor agrees meanwhile."""
    import shutil

    import flows.promote
    from flows.hourly import adapt_changed
    from metagan import model_versions
    from metagan.fleet_index import registry_index
    from metagan.lifecycle.fleet import default_every_s
    from metagan.lifecycle.fleet_repair import repair_index

    root, customers = project
    params = params_of(root)
    adapt_changed(params, str(customers))  # whatever earlier tests left: settled
    shutil.copy(customers / "alpha" / "0.png", customers / "beta" / "again.png")  # a new upload for beta

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("the hour killed before promoting")

    with monkeypatch.context() as m:
        m.setattr(flows.promote, "promote", killed)
        with pytest.raises(KeyboardInterrupt):
            adapt_changed(params, str(customers))
    name = "metagan-customer-beta"
    candidate = model_versions.get_alias(name, "candidate").version
    assert model_versions.get_alias(name, "production").version != candidate
    assert "beta" in registry_index().pending_adaptation()
    assert repair_index(registry_index(), default_every_s(params)).agreed  # doctor: nothing to rewrite

    hour = adapt_changed(params, str(customers))
    assert [(a.customer_id, a.reused, a.version) for a in hour.adapted] == [("beta", True, str(candidate))]
    assert [(p.customer_id, p.outcome.value) for p in hour.promoted] == [("beta", "promoted")]
    assert model_versions.get_alias(name, "production").version == candidate
    assert registry_index().pending_adaptation() == []
    assert adapt_changed(params, str(customers)).adapted == []
    (customers / "beta" / "again.png").unlink()  # as the tests after this one expect it
    adapt_changed(params, str(customers))


def test_a_scheduled_hour_in_which_a_customer_failed_to_adapt_ends_failed(project, first_run, monkeypatch):
    """Guarantee: the scheduled hour (deployment `hourly-adapt`) in which a customer's adaptation
    failed ends Failed in Prefect, naming how many failed, that they stay pending, and the first
    reason, as the night does; the next hour adapts the customer and is Completed. Until a probe of
    2026-12-07 it was "Completed" with the failure in its log alone (a new customer's ONNX export
    failing on a Dask worker went unseen)."""
    import shutil

    import flows.adapt_customers
    from flows.hourly import adapt_changed
    from flows.serve import adapt_new_customers

    root, customers = project
    adapt_changed(params_of(root), str(customers))  # whatever earlier tests left: settled
    shutil.copy(customers / "alpha" / "0.png", customers / "beta" / "hour.png")  # a new upload for beta

    def fails(uploads, *args):
        raise RuntimeError("We found a fake tensor in the exported program constant's list")

    with monkeypatch.context() as m:
        m.setattr(flows.adapt_customers, "adapt_one", fails)
        state = adapt_new_customers(str(customers), str(root / "params.yaml"), return_state=True)
    assert state.is_failed() and state.message.startswith("1 of 1 customer(s) failed to adapt, they stay pending"), state
    assert "first: beta: RuntimeError: We found a fake tensor" in state.message, state
    state = adapt_new_customers(str(customers), str(root / "params.yaml"), return_state=True)
    assert state.is_completed() and [p.customer_id for p in state.result()] == ["beta"], state
    (customers / "beta" / "hour.png").unlink()  # as the tests after this one expect it
    adapt_changed(params_of(root), str(customers))


def test_uploads_ingested_as_they_arrive_are_adapted_by_the_hour_without_a_scan(project, first_run, capsys):
    """At fleet scale the hour need not look at every folder (fleet.scan_uploads: false): an upload
    service ingests the customer whose uploads arrived (`metagan ingest --customer ID`), which
    records them in the fleet index, and the hour adapts that customer from the index alone. A
    customer the project knows whose folder is not there (gone since) fails alone, aloud (exit 0
    and nothing said, until a probe of 2026-12-06); a name it does not know at all (a typo) is
    rejected alone with the message every command gives, the others ingested."""
    import shutil

    import yaml

    from flows.app.cli import main
    from flows.common import load
    from flows.hourly import adapt_changed

    root, customers = project
    shutil.copy(customers / "alpha" / "1.png", customers / "beta" / "extra.png")
    assert main(["--params", str(root / "params.yaml"), "ingest", "--customers", str(customers),
                 "--customer", "beta", "--customer", "nosuch"]) == 1
    said = capsys.readouterr().out
    assert "nosuch: REJECTED unknown customer 'nosuch'" in said and "beta: 5 shots" in said, said
    (customers / "alpha").rename(root / "alpha-away")
    try:
        assert main(["--params", str(root / "params.yaml"), "ingest", "--customers", str(customers),
                     "--customer", "beta", "--customer", "alpha"]) == 1
    finally:
        (root / "alpha-away").rename(customers / "alpha")
    out = capsys.readouterr().out
    assert "beta: 5 shots" in out
    assert f"alpha: REJECTED customer 'alpha': its upload folder {customers / 'alpha'} does not exist" in out
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw.setdefault("fleet", {})["scan_uploads"] = False
    (root / "no-scan.yaml").write_text(yaml.safe_dump(raw))
    hour = adapt_changed(load(str(root / "no-scan.yaml")), str(customers))
    assert hour.changed == [] and [(a.customer_id, a.reused) for a in hour.adapted] == [("beta", False)]


def test_an_index_rebuilt_from_the_registry_makes_the_next_hour_scan_once(project, first_run, capsys):
    """Guarantee: an index lost or damaged, and rebuilt from the registry, no longer knows uploads
    ingested but not yet adapted; an hour that plans from the index alone (fleet.scan_uploads:
    false) then scans the folders once, so such a customer is still adapted, and the hour after
    plans from the index again. (A probe found the customer forgotten until its files changed.)"""
    import shutil

    from flows.app.cli import main
    from flows.common import load
    from flows.hourly import adapt_changed

    root, customers = project
    shutil.copy(customers / "beta" / "1.png", customers / "alpha" / "extra.png")  # a shot alpha had not
    assert main(["--params", str(root / "params.yaml"), "ingest", "--customers", str(customers),
                 "--customer", "alpha"]) == 0
    capsys.readouterr()
    (root / "mlflow" / "fleet.db").unlink()  # lost before the hour came
    no_scan = load(str(root / "no-scan.yaml"))
    hour = adapt_changed(no_scan, str(customers))
    assert "alpha" in hour.changed and [(a.customer_id, a.reused) for a in hour.adapted] == [("alpha", False)]
    again = adapt_changed(no_scan, str(customers))
    assert again.changed == [] and again.adapted == []


def test_pipeline_reads_its_warm_start_once_and_hands_it_down(project, first_run, capsys, monkeypatch):
    """Guarantee: `metagan pipeline` reads the warm-start checkpoint (`meta.init_checkpoint`) once,
    where it checks it before ingesting, and hands what it read down to the meta-model's identity
    and its training: the file can be gone after that one read. A probe counted three reads (the
    command's check, the meta-training flow's check and the identity's checksum), a fourth to train."""
    import shutil

    import yaml

    import metagan.meta
    from flows.app.cli import main
    from metagan.files import sha256_file

    root, customers = project
    start = root / "start.pt"
    shutil.copy(root / "artifacts" / "meta" / "checkpoint.pt", start)
    sha = sha256_file(start)
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["meta"].update(init_checkpoint=str(start), minutes=0.0)
    (root / "warm.yaml").write_text(yaml.safe_dump(raw))
    real, read = metagan.meta.check_warm_start, []

    def check_then_lose_the_file(params):
        read.append(real(params))
        start.unlink()  # nothing after this one read may need the file
        return read[-1]

    monkeypatch.setattr(metagan.meta, "check_warm_start", check_then_lose_the_file)
    assert main(["--params", str(root / "warm.yaml"), "pipeline", "--customers", str(customers), "--count", "2",
                 "--out", str(root / "out-warm")]) == 1  # the photos' customer is refused, as in every run
    summary = json.loads(capsys.readouterr().out)
    assert len(read) == 1 and read[0].sha256 == sha and not start.exists()
    assert summary["meta_version"] == "2" and all(a["ok"] for a in summary["adapted"])
    assert [p["outcome"] for p in summary["promoted"]] == ["promoted", "promoted"]


@pytest.mark.parametrize("command", ["adapt", "pipeline"])
def test_customers_adapted_before_the_dask_workers_were_lost_are_promoted_then_the_run_stops(
        project, first_run, capsys, monkeypatch, command):
    """Guarantee: when the fan-out's Dask workers are lost mid-run (flows.fanout raises WorkersLost),
    `metagan adapt` and `metagan pipeline` promote the customers adapted before the loss through the
    gate, as a whole run would, then stop unavailable (exit 4) naming the customers left, whose
    production stays. Both stopped at once, the finished customers' new versions left unpromoted
    (and pending in the index) until a rerun found them again; only the hourly run promoted them.
    The loss is raised by the fan-out's wait after its first task, as its cluster watch raises it."""
    import shutil

    import flows.fanout
    from flows.app.cli import main
    from flows.fanout import WorkersLost
    from metagan import model_versions
    from metagan.errors import ExitCode
    from metagan.fleet_index import registry_index

    root, customers = project
    shot = {"adapt": 2, "pipeline": 3}[command]  # a new upload for each customer: new versions to promote
    shutil.copy(customers / "alpha" / f"{shot}.png", customers / "beta" / f"lost-{command}.png")
    shutil.copy(customers / "beta" / f"{shot}.png", customers / "alpha" / f"lost-{command}.png")
    before = {c: model_versions.get_alias(f"metagan-customer-{c}", "production").version for c in ("alpha", "beta")}
    real = flows.fanout.as_finished

    def lost_after_the_first_task(futures):
        for future in real(futures):
            yield future
            raise WorkersLost("tcp://127.0.0.1:8786", 5.0)

    monkeypatch.setattr(flows.fanout, "as_finished", lost_after_the_first_task)
    args = ["--params", str(root / "params.yaml"), command, "--customers", str(customers)]
    capsys.readouterr()
    assert main(args + (["--out", str(root / "out-lost")] if command == "pipeline" else [])) == ExitCode.UNAVAILABLE
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert said.startswith("error: the Dask scheduler tcp://127.0.0.1:8786 has had no worker for 5 s"), said
    left = [c for c in ("alpha", "beta") if f"1 customer(s) not done ({c})" in said]
    assert len(left) == 1, said
    done = "beta" if left == ["alpha"] else "alpha"
    production = model_versions.get_alias(f"metagan-customer-{done}", "production").version
    assert production != before[done]  # the version adapted before the loss, promoted
    assert model_versions.get_version(f"metagan-customer-{done}", production).tags["shots"] == str(
        len([f for f in (customers / done).iterdir() if f.suffix == ".png"]))
    assert model_versions.get_alias(f"metagan-customer-{left[0]}", "production").version == before[left[0]]
    pending = registry_index().pending_adaptation()
    assert done not in pending and left[0] in pending


def test_a_version_that_failed_the_parity_check_is_adapted_again_not_reused(project, first_run, monkeypatch):
    """A version whose ONNX graph failed the parity check (a kept graph damaged, found by a probe of
    2026-12-07) was reused by every later adaptation of the same uploads and settings, failing the
    customer at every run with no command to serve it again: it is adapted again, and the version
    that passes is then the one reused."""
    import metagan.customer_model
    from metagan import model_versions
    from metagan.customers import load_ingested
    from metagan.lifecycle.registry import adapt_and_register

    root, _ = project
    params = params_of(root).with_overrides(adapt={"mode_seeking": 0.25})  # an identity of its own
    uploads = load_ingested(params.resolve(params.paths.ingested_customers), "beta")
    meta = str(model_versions.get_alias("metagan-meta", "current").version)
    name = "metagan-customer-beta"
    candidate = model_versions.get_alias(name, "candidate").version
    with monkeypatch.context() as m:
        m.setattr(metagan.customer_model, "check_parity", lambda *a, **k: 1.0)
        failed = adapt_and_register(uploads, params, meta)
    assert not failed.ok and not failed.reused and "parity" in failed.error
    again = adapt_and_register(uploads, params, meta)
    assert again.ok and not again.reused and int(again.version) > int(failed.version)
    assert (lambda a: (a.ok, a.reused, a.version))(adapt_and_register(uploads, params, meta)) == (True, True, again.version)
    model_versions.set_alias(name, "candidate", candidate)  # as it was, for whatever runs after
