"""Lost and damaged registry state: a missing or unreadable registry fails every command at once
with one line naming the file, and is never silently replaced; `metagan doctor` checks every
production, candidate and previous model file, and the meta-model's and evaluator's, against the
checksum recorded at registration; `generate`
refuses a damaged model with one line. Real SQLite registries and real ONNX files, damaged the
way disks and people damage them (deleted, truncated, overwritten)."""

import hashlib
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import torch

from flows.app.cli import main
from metagan import model_names, model_versions, serving, store, tracking
from metagan.errors import Damaged, ExitCode
from metagan.files import sha256_file
from metagan.lifecycle.health import check_registry

CUSTOMERS = ("a", "b", "c", "d")


pytestmark = pytest.mark.usefixtures("clean_process")  # tests/conftest.py


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A project whose registry has four customers in production (tiny ONNX models), as after
    `metagan demo`: the embedded store at mlflow/mlflow.db, the model files in mlflow/artifacts;
    built once, with a copy of its mlflow/ folder to restore before each test."""
    from metagan.export import export_generator_onnx
    from metagan.nets import Generator, SampleGenerator, net_config

    root = tmp_path_factory.mktemp("project")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow' / 'mlflow.db'}")
        tracking.create_store()
        for i, cid in enumerate(CUSTOMERS):
            torch.manual_seed(i)
            generator = SampleGenerator(Generator(net_config("tiny", 16, 1, code_dim=8)), torch.randn(8))
            onnx = export_generator_onnx(generator, root / f"{cid}.onnx")
            name = model_names.customer_model_name(cid)
            with tracking.start_run(f"adapt-{cid}", {}):
                version = model_versions.log_onnx_model(onnx, name, {"parity_ok": "true"})
            for alias in (model_names.CANDIDATE, model_names.PRODUCTION):
                model_versions.set_alias(name, alias, version.version)
    shutil.copytree(root / "mlflow", root / "pristine")
    return root


@pytest.fixture
def project(registered, monkeypatch):
    shutil.rmtree(registered / "mlflow")
    shutil.rmtree(registered / "out", ignore_errors=True)
    shutil.copytree(registered / "pristine", registered / "mlflow")
    monkeypatch.setenv("METAGAN_PROJECT", str(registered))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{registered / 'mlflow' / 'mlflow.db'}")
    return registered


def run(capsys, *argv: str) -> tuple[int, list[str], float]:
    start = time.monotonic()
    rc = main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.err.strip().splitlines(), time.monotonic() - start


def model_file(cid: str, alias: str = model_names.PRODUCTION) -> Path:
    """The registered ONNX file of the customer's version ``alias`` names (under mlflow/artifacts)."""
    version = model_versions.get_alias(model_names.customer_model_name(cid), alias)
    folder = store.client().get_logged_model(version.source.removeprefix("models:/")).artifact_location
    return Path(unquote(urlparse(folder).path)) / "model.onnx"


READERS = [("models",), ("doctor",), ("promote",), ("rollback", "--customer", "a"),
           ("generate", "--customer", "a", "--count", "2")]


@pytest.mark.parametrize("fault", ["deleted", "emptied", "truncated", "overwritten"])
def test_a_lost_or_unreadable_registry_fails_every_command_at_once_with_one_line(project, capsys, fault):
    """Guarantee: with the registry database deleted, emptied (0 bytes), truncated or overwritten,
    `models`, `doctor`, `promote`, `rollback` and `generate` each exit 5 (damaged state) with one
    line naming the file and saying to restore it from backup, before any work; none of them
    creates a new, empty registry in its place."""
    db = project / "mlflow" / "mlflow.db"
    if fault == "deleted":
        db.unlink()
    elif fault == "emptied":
        db.write_bytes(b"")
    elif fault == "truncated":
        with open(db, "r+b") as f:
            f.truncate(db.stat().st_size // 3)
    else:
        db.write_bytes(os.urandom(db.stat().st_size))
    before = db.read_bytes() if db.exists() else None
    for argv in READERS:
        rc, err, seconds = run(capsys, *argv, "--out", str(project / "out")) if argv[0] == "generate" \
            else run(capsys, *argv)
        assert rc == ExitCode.DAMAGED, (argv, err)
        assert len(err) == 1 and str(db) in err[0] and "restore it from backup" in err[0], (argv, err)
        assert ("is gone" in err[0]) == (fault == "deleted"), err
        assert seconds < 5, (argv, seconds)
    assert (db.read_bytes() if db.exists() else None) == before  # nothing replaced it or wrote to it
    assert not (project / "out").exists()


def test_only_a_step_that_starts_a_project_creates_a_registry_and_never_over_a_lost_one(project, tmp_path_factory,
                                                                                         monkeypatch, capsys):
    """Guarantee: a registry is created only by the steps that start a project (meta-training, the
    evaluator's registration: `tracking.create_store`); in a new project the read-only commands
    fail instead of creating one, and where a registry was lost (its model files remain) even those
    steps refuse to start a new one."""
    db = project / "mlflow" / "mlflow.db"
    db.unlink()
    with pytest.raises(Damaged, match="is gone .* restore it from backup, or move .*artifacts away"):
        tracking.create_store()
    assert not db.exists()

    fresh = tmp_path_factory.mktemp("fresh")
    monkeypatch.setenv("METAGAN_PROJECT", str(fresh))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{fresh / 'mlflow' / 'mlflow.db'}")
    rc, err, _ = run(capsys, "models")  # a project just made (no mlflow/ yet): nothing was lost, nothing to restore
    assert rc == ExitCode.BAD_INPUT and "this project has no registry yet" in err[0] and "metagan meta-train" in err[0]
    assert "restore" not in err[0] and not (fresh / "mlflow").exists()
    from metagan.customers import IngestResult
    from metagan.lifecycle import fleet

    # uploads ingested before any meta-model (`metagan init`, then `metagan ingest`): the fleet index
    # alone in mlflow/ is no registry lost (it said "restore it from backup", exit 5: probe of 2026-12-07)
    fleet.record_ingestion([IngestResult("acme", ok=True, shots=3, content_hash="h", signature="sig")])
    assert (fresh / "mlflow" / "fleet.db").is_file()
    for argv in (["models"], ["adapt", "--customers", str(fresh)], ["generate", "--customer", "acme"]):
        rc, err, _ = run(capsys, *argv)
        assert rc == ExitCode.BAD_INPUT and "this project has no registry yet" in err[0] and "restore" not in err[0], \
            (argv, err)
    shutil.rmtree(fresh / "mlflow")
    (fresh / "mlflow").mkdir()  # its folder there, the database not: a registry that was
    rc, err, _ = run(capsys, "models")
    assert rc == ExitCode.DAMAGED and "there is no registry at" in err[0] and "metagan meta-train" in err[0]
    assert not (fresh / "mlflow" / "mlflow.db").exists()
    tracking.create_store()
    assert (fresh / "mlflow" / "mlflow.db").is_file()
    assert run(capsys, "models")[0] == ExitCode.OK


def test_a_registry_whose_creation_was_cut_short_is_made_again_by_a_step_that_starts_a_project(
        tmp_path_factory, monkeypatch, capsys, caplog):
    """A Ctrl-C in the first second of `metagan demo` left mlflow.db with some of MLflow's tables and
    no schema stamp, and every command then said "no MLflow registry tables (empty or replaced);
    restore it from backup", with nothing to restore (a probe of 2026-12-07). A step that starts a
    project makes it again; one that holds a model, or is being made now (younger than two
    minutes), is left alone."""
    import logging
    import os
    import sqlite3
    import time

    fresh = tmp_path_factory.mktemp("cut-short")
    monkeypatch.setenv("METAGAN_PROJECT", str(fresh))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{fresh / 'mlflow' / 'mlflow.db'}")
    db = fresh / "mlflow" / "mlflow.db"
    db.parent.mkdir()

    def half_made(models: int = 0, age_s: float = 600) -> None:
        db.unlink(missing_ok=True)
        with sqlite3.connect(db) as con:
            con.execute("CREATE TABLE experiments (experiment_id INTEGER, name TEXT)")
            con.execute("CREATE TABLE registered_models (name TEXT)")
            con.execute("CREATE TABLE alembic_version (version_num TEXT)")
            con.executemany("INSERT INTO registered_models VALUES (?)", [(f"m{i}",) for i in range(models)])
        os.utime(db, (time.time() - age_s, time.time() - age_s))

    for models, age_s in ((1, 600), (0, 5)):  # a model in it; made a moment ago (another command's, maybe)
        half_made(models, age_s)
        with pytest.raises(Damaged, match="holds no MLflow registry tables"):
            tracking.create_store()
    half_made()
    rc, err, _ = run(capsys, "models")  # a read-only command creates nothing, as before
    assert rc == ExitCode.DAMAGED and "restore it from backup" in err[0]
    with caplog.at_level(logging.WARNING, logger="metagan.store"):
        store.check_configured_store(create=True)  # `metagan demo`'s check before any work
    assert "left half-created by a run killed while making it: made again" in caplog.text and not db.exists()
    half_made()
    tracking.create_store()
    assert run(capsys, "models")[0] == ExitCode.OK

    # killed in MLflow's migrations (12.5 s into a new project's first `metagan demo`, a probe of
    # 2026-12-07): stamped part-way, a migration's table left; refused by every command for good
    with sqlite3.connect(db) as con:
        first = con.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        con.execute("UPDATE alembic_version SET version_num = '451aebb31d03'")  # an early revision of MLflow's
        con.execute("CREATE TABLE _alembic_tmp_experiments (experiment_id INTEGER)")
    os.utime(db, (time.time() - 600, time.time() - 600))
    store._forget_mlflow_stores(db)  # as a new process, whose MLflow opens the file and migrates it again
    rc, err, _ = run(capsys, "models")  # what to do, not "restore it from backup", with nothing to restore
    assert rc == ExitCode.DAMAGED and "left half-created by a run killed while making it" in err[0] \
        and "`metagan demo` or `metagan meta-train` makes it again" in err[0], "\n".join(err)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="metagan.store"):
        store.check_configured_store(create=True)
    assert "left half-created by a run killed while making it: made again" in caplog.text and not db.exists()
    tracking.create_store()
    assert run(capsys, "models")[0] == ExitCode.OK
    with sqlite3.connect(db) as con:  # a registry made whole, with nothing in it yet, is never made again
        assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == first
    os.utime(db, (time.time() - 600, time.time() - 600))
    store.check_configured_store(create=True)
    assert db.exists() and run(capsys, "models")[0] == ExitCode.OK
    # a registry an older MLflow wrote (MLflow upgraded since): what to run, not a bug's traceback (exit 70)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE alembic_version SET version_num = '451aebb31d03'")
        con.execute("INSERT INTO registered_models (name, creation_time, last_updated_time) VALUES ('m', 0, 0)")
    store._forget_mlflow_stores(db)
    rc, err, _ = run(capsys, "models")
    assert rc == ExitCode.DAMAGED and err == [
        f"error: the registry at {db} was written by an older MLflow (schema 451aebb31d03; this MLflow's is {first}): "
        f"back it up, then `mlflow db upgrade sqlite:///{db}` (docs/DEPLOY.md, section 5)"], err


def test_registration_records_the_checksum_of_the_stored_model_file(project):
    """Guarantee: every customer version registered from now on carries `onnx_sha256`, the sha256 of
    its model file as the registry stores it, which is the exported file byte for byte."""
    for cid in CUSTOMERS:
        version = model_versions.get_alias(model_names.customer_model_name(cid), model_names.PRODUCTION)
        stored = model_file(cid)
        assert version.tags[model_versions.ONNX_SHA256_TAG] == sha256_file(stored) == sha256_file(project / f"{cid}.onnx")


def test_doctor_and_generate_find_deleted_truncated_and_altered_model_files(project, capsys):
    """Guarantee: `metagan doctor` checks every production and candidate version: a deleted, a
    truncated and an altered (same size, other bytes) model file are each reported DAMAGED, the
    healthy one ok, exit 5; `generate` refuses each damaged one with one line (exit 5) and serves
    the healthy one."""
    model_file("a").unlink()
    with open(model_file("b"), "r+b") as f:
        f.truncate(100)
    altered = bytearray(model_file("c").read_bytes())
    altered[-200:] = bytes(200)  # weights zeroed: still a loadable model, not the registered one
    model_file("c").write_bytes(bytes(altered))

    health = check_registry()
    assert {v.customer_id: v.ok for v in health.versions} == {"a": False, "b": False, "c": False, "d": True}
    assert all(v.aliases == ("production", "candidate") for v in health.versions)
    rc, _, seconds = run(capsys, "doctor")
    assert rc == ExitCode.DAMAGED and seconds < 5

    for cid in ("a", "b", "c"):
        rc, err, seconds = run(capsys, "generate", "--customer", cid, "--count", "2", "--out", str(project / "out"))
        assert rc == ExitCode.DAMAGED and len(err) == 1 and seconds < 5, (cid, err)
        assert not (project / "out" / cid).exists()
    assert run(capsys, "generate", "--customer", "d", "--count", "2", "--out", str(project / "out"))[0] == ExitCode.OK


def test_doctor_finishes_a_promotion_cut_short_between_its_alias_writes(project, capsys):
    """Guarantee: `metagan doctor` finds customers whose `production` and `previous` name one
    version (a promotion or rollback killed between its two alias writes), finishes the move its
    record names (production moves, the fleet index follows), and names one no record explains,
    each once."""
    import json

    from metagan.fleet_index import registry_index
    from metagan.lifecycle import production_moves

    for cid in ("a", "b"):  # a second version of each, as a promotion killed after `previous` left them
        name = model_names.customer_model_name(cid)
        first = model_versions.get_alias(name, model_names.PRODUCTION)
        second = model_versions.register_version(name, first.source, first.run_id, dict(first.tags),
                                                 model_id=first.source.removeprefix("models:/"))
        model_versions.set_alias(name, model_names.PREVIOUS, first.version)
        if cid == "a":
            model_versions.set_model_tag(name, production_moves.MOVE_TAG, json.dumps(
                {"kind": "promotion", "production": str(second.version), "previous": str(first.version)}))
    assert main(["doctor"]) == ExitCode.OK
    out, err = capsys.readouterr()
    assert "customer 'a': finished a promotion cut short between its alias writes" in out
    assert "cut short" not in err  # said once, in doctor's own list (a probe saw it twice)
    assert "customer 'b': production and previous both name version 1, and no record" in out
    a = model_names.customer_model_name("a")
    assert (str(model_versions.get_alias(a, model_names.PRODUCTION).version),
            str(model_versions.get_alias(a, model_names.PREVIOUS).version)) == ("2", "1")
    assert registry_index().rows()["a"].production_version == "2"


def flip_last_byte(path: Path) -> None:
    """The same size, one byte other (a random file's last byte may be the one written over it)."""
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))


def test_doctor_checks_previous_versions_and_rollback_refuses_a_damaged_one(project, capsys):
    """Guarantee: `metagan doctor` checks the `previous` version too (what `metagan rollback` would
    put into production): its damaged file is DAMAGED, naming the file, the registered and found
    sha256 and that rollback refuses it, exit 5; rollback then refuses it (exit 5) and production stays."""
    name = model_names.customer_model_name("a")
    first = model_versions.get_alias(name, model_names.PRODUCTION)
    with tracking.start_run("adapt-a-again", {}):  # another file: b's export serves as a's second model
        second = model_versions.log_onnx_model(project / "b.onnx", name, {"parity_ok": "true"})
    model_versions.set_alias(name, model_names.PREVIOUS, first.version)
    for alias in (model_names.CANDIDATE, model_names.PRODUCTION):
        model_versions.set_alias(name, alias, second.version)
    assert check_registry().ok
    damaged = model_file("a", model_names.PREVIOUS)
    flip_last_byte(damaged)

    (check,) = check_registry().damaged
    assert (check.customer_id, check.version, check.aliases) == ("a", str(first.version), ("previous",))
    assert main(["doctor"]) == ExitCode.DAMAGED
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("DAMAGED")]
    assert str(damaged) in line and first.tags[model_versions.ONNX_SHA256_TAG][:12] + "... registered" in line
    assert hashlib.sha256(damaged.read_bytes()).hexdigest()[:12] + "... found" in line
    assert "`metagan rollback` refuses it" in line and "restore mlflow/artifacts from backup" in line
    rc, err, _ = run(capsys, "rollback", "--customer", "a")
    assert rc == ExitCode.DAMAGED and len(err) == 1, err
    assert str(model_versions.get_alias(name, model_names.PRODUCTION).version) == str(second.version)


def register_file(model: str, path: Path, tag: str, folder: str) -> None:
    """``path`` registered as ``model``'s ``current`` version, as meta-training registers its checkpoint."""
    with tracking.start_run(f"register-{model}", {}) as logged:
        tracking.log_file(path, folder)
        version = model_versions.register_artifact(model, logged, folder, {tag: sha256_file(path)})
    model_versions.set_alias(model, model_names.CURRENT, version.version)


@pytest.mark.parametrize("fault", ["altered", "deleted"])
def test_doctor_checks_the_meta_model_and_evaluator_files_against_their_checksums(project, tmp_path, capsys,
                                                                                  monkeypatch, fault):
    """Guarantee: `metagan doctor` checks the file of the meta-model's and the evaluator's `current`
    version against the sha256 tag recorded at registration: an altered or deleted one is DAMAGED,
    naming the model, version, file and checksums (registered, found), with what to do: copy back
    the project's own copy where it has the registered checksum, else restore from backup or
    register anew; exit 5. Doctor changes neither the file nor its tag. A worker fetching the
    damaged checkpoint (`registry.meta_checkpoint`) refuses it, and caches nothing."""
    from metagan.config import load_params
    from metagan.lifecycle import meta_model, registry

    meta, evaluator = tmp_path / "checkpoint.pt", tmp_path / "evaluator.pt"
    meta.write_bytes(os.urandom(3000))
    evaluator.write_bytes(os.urandom(2000))
    params = load_params().with_overrides(paths={"meta_checkpoint": str(meta), "evaluator": str(evaluator)})
    register_file(model_names.META_MODEL, meta, model_versions.CHECKPOINT_SHA256_TAG, "checkpoint")
    assert meta_model.register_evaluator(params).registered  # the evaluator's own registration
    health = check_registry(params)
    assert [(f.what, f.ok) for f in health.files] == [("meta-model", True), ("evaluator", True)]
    stored = {f.what: Path(f.file) for f in health.files}
    assert stored["meta-model"].is_relative_to(project / "mlflow" / "artifacts") and stored["meta-model"].name == meta.name
    assert main(["doctor"]) == ExitCode.OK
    assert "ok      meta-model metagan-meta v1 (current): checked by checksum" in capsys.readouterr().out

    if fault == "altered":
        for path in stored.values():
            flip_last_byte(path)
    else:
        for path in stored.values():
            path.unlink()
    evaluator.write_bytes(b"another evaluator since")  # the project's copy differs: no copy to offer
    meta_check, evaluator_check = check_registry(params).files
    assert not meta_check.ok and not evaluator_check.ok
    assert meta_check.expected == sha256_file(meta) and meta_check.version == "1"
    if fault == "altered":
        assert meta_check.found == sha256_file(stored["meta-model"]) and meta_check.file == str(stored["meta-model"])
        assert f"{meta_check.expected[:12]}... registered, {meta_check.found[:12]}... found" in meta_check.problem
    else:
        assert meta_check.found == "" and "missing" in meta_check.problem
    assert meta_check.fix == f"the project's copy {meta} has the registered sha256: copy it to {stored['meta-model']}"
    assert "restore mlflow/artifacts from backup" in evaluator_check.fix
    assert "metagan-evaluator" in evaluator_check.describe() and evaluator_check.describe().startswith("DAMAGED")

    rc, _, _ = run(capsys, "doctor")
    assert rc == ExitCode.DAMAGED
    version = model_versions.get_alias(model_names.META_MODEL, model_names.CURRENT)
    assert version.tags[model_versions.CHECKPOINT_SHA256_TAG] == sha256_file(meta)  # never tagged to pass
    away = params.with_overrides(paths={"meta_checkpoint": str(tmp_path / "worker" / meta.name)})
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the workers' cache: this test's own
    if fault == "altered":  # a worker without the file fetches it: refused, not used or cached
        with pytest.raises(Damaged, match="metagan-meta version 1: .* registered, .* found"):
            registry.meta_checkpoint(away, "1")
    shutil.copy(meta, stored["meta-model"])  # the fix named
    assert check_registry(params).files[0].ok
    assert sha256_file(registry.meta_checkpoint(away, "1")) == sha256_file(meta)


def records_naming(project: Path, folder: Path) -> list[tuple[str, str, str, str]]:
    """(database, table, column, value) of every text naming a file under ``folder`` in the
    SQLite databases of ``project`` (its registry and fleet index, in mlflow/)."""
    import sqlite3
    from contextlib import closing

    found = []
    for db in sorted((project / "mlflow").glob("*.db")):
        with closing(sqlite3.connect(db)) as con:
            for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                for column in [c[1] for c in con.execute(f'PRAGMA table_info("{table}")')]:
                    for (value,) in con.execute(f'SELECT "{column}" FROM "{table}"'):
                        if isinstance(value, str) and (folder.as_uri() in value or str(folder) in value):
                            found.append((db.name, table, column, value))
    return found


def test_a_copied_project_reads_and_writes_its_own_model_files_not_the_originals(project, tmp_path, monkeypatch,
                                                                                   capsys):
    """Guarantee: a project folder copied elsewhere (`cp -r`) serves, checks and logs with its own
    model files: the first command in the copy points every record of its registry and fleet
    index that named the original's `mlflow/artifacts` at its own, and says so; the original is
    untouched. A probe's copy read the original's files (MLflow records absolute locations), and
    once the original was deleted said "its files are missing ...; restore mlflow/artifacts from
    backup" while they were there, in the copy."""
    assert main(["doctor"]) == ExitCode.OK  # the original's fleet index holds the models' locations too
    copy = tmp_path / "copy"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns("pristine", "out"))
    original = project / "mlflow" / "artifacts"
    assert records_naming(copy, copy / "mlflow" / "artifacts") == [] and records_naming(copy, original)
    shutil.rmtree(original)  # the original deleted (or changed) after the copy
    capsys.readouterr()
    monkeypatch.setenv("METAGAN_PROJECT", str(copy))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{copy / 'mlflow' / 'mlflow.db'}")
    rc, err, _ = run(capsys, "generate", "--customer", "a", "--count", "2", "--out", str(copy / "out"))
    assert rc == ExitCode.OK, err
    assert any("this project was copied or moved from there" in line for line in err)
    assert records_naming(copy, original) == []
    assert {(db, table) for db, table, _, _ in records_naming(copy, copy / "mlflow" / "artifacts")} >= {
        ("mlflow.db", "experiments"), ("mlflow.db", "model_versions"), ("mlflow.db", "model_version_tags"),
        ("fleet.db", "metagan_fleet")}
    rc, err, _ = run(capsys, "doctor")
    assert rc == ExitCode.OK and not any("copied" in line for line in err), err  # once
    with tracking.start_run("after-the-copy", {}) as logged:
        tracking.log_file(copy / "a.onnx", "files")
    assert (copy / "mlflow" / "artifacts" / logged.info.run_id / "artifacts" / "files" / "a.onnx").is_file()
    assert not original.exists() and records_naming(project, original)  # the original's registry untouched


def test_a_registry_copied_without_its_files_is_named_not_pointed_at_nothing(project, tmp_path, monkeypatch, caplog):
    """Guarantee: a registry database copied without the model files (no `mlflow/artifacts` beside
    it) keeps naming the files it has, with a warning that says where they are and what to copy."""
    copy = tmp_path / "copy" / "mlflow"
    copy.mkdir(parents=True)
    shutil.copy(project / "mlflow" / "mlflow.db", copy / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{copy / 'mlflow.db'}")
    with caplog.at_level("WARNING", logger="metagan.store"):
        store.check_configured_store()
    assert f"copy {project / 'mlflow' / 'artifacts'} to {copy / 'artifacts'}" in caplog.text
    assert records_naming(copy.parent, project / "mlflow" / "artifacts")  # unchanged
    assert serving.production_model("a").version == "1"

def test_versions_registered_without_a_checksum_are_checked_by_loading(project):
    """Guarantee: a version registered before `onnx_sha256` existed is checked by loading its model
    (onnxruntime): a loadable one passes, a truncated one is damaged."""
    name = model_names.customer_model_name("a")
    version = model_versions.get_alias(name, model_names.PRODUCTION).version
    db = project / "mlflow" / "mlflow.db"
    with sqlite3.connect(db) as con:  # as an older metagan registered it: no checksum tag
        con.execute("DELETE FROM model_version_tags WHERE key = ?", (model_versions.ONNX_SHA256_TAG,))
    con.close()
    (check,) = [v for v in check_registry().versions if v.customer_id == "a"]
    assert check.ok and check.how == "loaded"
    with open(model_file("a"), "r+b") as f:
        f.truncate(300)
    (check,) = [v for v in check_registry().versions if v.customer_id == "a"]
    assert not check.ok and check.how == "loaded" and "restore" in check.problem
    with pytest.raises(Damaged):
        serving.verify_model_bytes(model_file("a").read_bytes(), None)
    assert version == model_versions.get_alias(name, model_names.PRODUCTION).version


def test_verify_model_bytes_accepts_the_registered_file_and_nothing_else(project):
    """Guarantee: the check generate calls (`serving.verify_model_bytes`) passes exactly the bytes
    whose sha256 was recorded."""
    data = model_file("a").read_bytes()
    serving.verify_model_bytes(data, hashlib.sha256(data).hexdigest())
    with pytest.raises(Damaged, match="checksum"):
        serving.verify_model_bytes(data[:-1] + b"\0", hashlib.sha256(data).hexdigest())


def test_a_writer_killed_mid_transaction_leaves_a_registry_that_reads_as_before_not_damaged(tmp_path):
    """Guarantee: a process killed (SIGKILL) inside a write transaction of the embedded registry
    leaves a hot journal; the next command's health check rolls it back (as SQLite's recovery does)
    and reads the registry as it was before that transaction, instead of calling it unreadable
    (seen: the rerun of a killed night failed with "attempt to write a readonly database")."""
    import subprocess
    import sys
    import textwrap

    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as con:
        for table in ("registered_models", "model_versions", "registered_model_aliases"):
            con.execute(f"CREATE TABLE {table} (name TEXT)")
        con.execute("INSERT INTO registered_models VALUES ('kept')")
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sqlite3, sys, time
        con = sqlite3.connect({str(db)!r}, isolation_level=None)
        con.execute("PRAGMA cache_size = 1")  # pages spill into the file before the commit
        con.execute("BEGIN")
        for i in range(20000):
            con.execute("INSERT INTO model_versions VALUES (?)", ("x" * 200 + str(i),))
        print("in the transaction", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "in the transaction"
    writer.kill()
    writer.wait()
    assert (tmp_path / "mlflow.db-journal").exists()  # hot: its writer is gone
    store._STORE_CHECKED.pop(str(db), None)
    store.check_store(db)  # not Damaged
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM model_versions").fetchone() == (0,)
        assert con.execute("SELECT name FROM registered_models").fetchall() == [("kept",)]
