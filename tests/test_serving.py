"""Serving without the training stack: ``metagan generate`` reads the embedded registry directly
(metagan.mlflow_sqlite), checks the model against its registered checksum, previews candidates,
versions and local files, and imports neither torch, MLflow nor Prefect. ``metagan models`` fits
100 columns and says whose metrics it shows."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flows.app.cli import main
from flows.console import Console
from metagan import mlflow_sqlite, model_names, model_versions, serving, tracking
from metagan.config import PROJECT_ROOT
from metagan.errors import BadInput, Damaged, ExitCode, NotFound
from metagan.files import sha256_file


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("METAGAN_PROJECT", str(tmp_path))
    tracking.experiment_id()
    yield tmp_path
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, Console)]:
        root.removeHandler(h)


def tiny_onnx(path, seed: int):
    from metagan.export import export_generator_onnx
    from metagan.nets import Generator, SampleGenerator, net_config

    torch.manual_seed(seed)
    return export_generator_onnx(SampleGenerator(Generator(net_config("tiny", 16, 1, code_dim=8)), torch.randn(8)),
                                 path)


@pytest.fixture
def acme(store):
    """Customer acme: version 1 in production, version 2 the candidate (different weights), both
    with their checksum tag; the meta-model registered with ``current``."""
    name = model_names.customer_model_name("acme")
    files = {}
    for v, alias in ((1, model_names.PRODUCTION), (2, model_names.CANDIDATE)):
        files[str(v)] = tiny_onnx(store / f"v{v}.onnx", seed=v)
        with tracking.start_run(f"adapt-{v}", {}):
            mv = model_versions.log_onnx_model(files[str(v)], name, {"parity_ok": "true", "shot_coverage": "0.25",
                                                               "onnx_sha256": sha256_file(files[str(v)])})
        model_versions.set_alias(name, alias, mv.version)
    with tracking.start_run("meta", {}) as run:
        meta = model_versions.register_version(model_names.META_MODEL, mv.source, run.info.run_id, {})
    model_versions.set_alias(model_names.META_MODEL, model_names.CURRENT, meta.version)
    return files


def test_the_registered_file_is_the_exported_file_byte_for_byte(acme):
    """The batch job can check a model against the checksum of the file adaptation exported."""
    served = serving.served_model("acme")
    assert served.onnx == acme["1"].read_bytes()
    assert serving.load_onnx_bytes("models:/metagan-customer-acme/2") == acme["2"].read_bytes()


def test_the_direct_reader_agrees_with_mlflows_client(acme, monkeypatch):
    asked = [("metagan-customer-acme", "production", None), ("metagan-customer-acme", "candidate", None),
             ("metagan-customer-acme", None, 1), ("metagan-customer-acme", None, "2"),
             ("metagan-customer-acme", "previous", None), ("metagan-customer-acme", None, 9),
             ("metagan-customer-nosuch", "production", None)]
    direct = [serving.load_onnx_version(*a) for a in asked]

    def unknown(*a, **k):
        raise mlflow_sqlite.UnknownLayout("forced")

    monkeypatch.setattr(mlflow_sqlite, "read_version", unknown)
    through_mlflow = [serving.load_onnx_version(*a) for a in asked]
    assert direct == through_mlflow
    assert [d.version if d else None for d in direct] == ["1", "2", "1", "2", None, None, None]


def test_the_direct_reader_lists_the_names_mlflows_client_lists(acme, store):
    """The names the unknown-customer check reads (metagan.known_customers) are MLflow's."""
    model_versions.register_version(model_names.customer_model_name("acme_2"), acme["1"].as_uri(), "", {})
    direct = mlflow_sqlite.model_names(store / "mlflow.db", model_names.CUSTOMER_PREFIX)
    assert direct == sorted(m.name for m in model_versions.list_models(model_names.CUSTOMER_PREFIX)) == [
        "metagan-customer-acme", "metagan-customer-acme_2"]
    assert mlflow_sqlite.model_names(store / "mlflow.db", "metagan-customer-", "metagan-customer-acme_2") == [
        "metagan-customer-acme_2"]
    assert mlflow_sqlite.model_names(store / "mlflow.db", "metagan-customer-", "metagan-customer-acme2") == []
    assert mlflow_sqlite.model_names(store / "nosuch.db", "metagan-") == []


def test_a_model_that_does_not_match_its_checksum_is_refused(acme, store, capsys):
    stored = mlflow_sqlite.onnx_file(mlflow_sqlite.read_version(store / "mlflow.db", "metagan-customer-acme",
                                                                "production"))
    stored.write_bytes(stored.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(Damaged, match="checksum"):
        serving.served_model("acme")
    assert main(["generate", "--customer", "acme", "--out", str(store / "out")]) == ExitCode.DAMAGED
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (store / "out").exists()


def test_unknown_customer_alias_or_version_is_bad_input(acme, capsys):
    with pytest.raises(NotFound, match="no production model"):
        serving.served_model("nosuch")
    with pytest.raises(NotFound, match="no previous model"):
        serving.served_model("acme", "previous")
    assert main(["generate", "--customer", "acme", "--version", "7"]) == ExitCode.BAD_INPUT
    assert capsys.readouterr().err.strip() == "error: customer 'acme' has no model version 7"


def images(folder):
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("0*.png"))])


def test_generate_serves_production_and_previews_candidate_version_and_file(acme, store, capsys):
    from metagan.onnx_runtime import sample_onnx

    out = store / "out"
    assert main(["generate", "--customer", "acme", "--count", "5", "--out", str(out), "--seed", "3"]) == 0
    assert "metagan-customer-acme v1 (production)" in capsys.readouterr().out
    manifest = json.loads((out / "acme/manifest.json").read_text())
    assert manifest["model"] | {} == {"name": "metagan-customer-acme", "version": "1", "alias": "production",
                                      "uri": "models:/metagan-customer-acme/1", "sha256": sha256_file(acme["1"])}
    assert manifest["count"] == 5 and len(manifest["files"]) == 5
    assert {"contact-sheet.png", "index.html"} <= {p.name for p in (out / "acme").iterdir()}
    assert np.array_equal(images(out / "acme")[..., None], sample_onnx(acme["1"], 5, seed=3))

    # previews go beside production's batch, never over it, under a name no customer can have
    assert main(["generate", "--customer", "acme", "--alias", "candidate", "--count", "5", "--out", str(out),
                 "--seed", "3"]) == 0
    assert main(["generate", "--customer", "acme", "--version", "2", "--count", "5", "--out", str(out),
                 "--seed", "3"]) == 0
    named_like_the_customer = store / "acme.onnx"  # a probe's file of that name wrote over production
    named_like_the_customer.write_bytes(Path(acme["2"]).read_bytes())
    assert main(["generate", "--model", str(named_like_the_customer), "--count", "5", "--out", str(out),
                 "--seed", "3"]) == 0
    assert f"of the local file {named_like_the_customer} to {out / '_previews' / 'acme-local'}" in capsys.readouterr().out
    candidate = sample_onnx(acme["2"], 5, seed=3)
    for folder in ("_previews/acme-candidate", "_previews/acme-v2", "_previews/acme-local"):
        assert np.array_equal(images(out / folder)[..., None], candidate), folder
    assert json.loads((out / "_previews/acme-candidate/manifest.json").read_text())["model"]["alias"] == "candidate"
    assert np.array_equal(images(out / "acme")[..., None], sample_onnx(acme["1"], 5, seed=3))
    # the customers' folders and the previews' (and the batches' lock files, hidden)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["_previews", "acme"]


def test_a_preview_never_writes_into_a_customers_folder_whatever_the_customers_are_called(acme, store):
    """Guarantee: previews (`--model FILE`, `--alias`, `--version`) go under `_previews/`, a name
    no customer id can take (ids start with a letter or digit), so customers named `acme-local`,
    `acme-candidate` or `acme-v2` keep their own batches. Before, `--model acme.onnx` wrote into
    `OUT/acme-local/`, customer `acme-local`'s folder, and `--alias candidate` into `acme-candidate`'s."""
    from metagan.generate import PREVIEWS, run_batch_job
    from metagan.uploads import CUSTOMER_ID

    assert not CUSTOMER_ID.fullmatch(PREVIEWS)
    out = store / "out"
    production = serving.served_model("acme")
    theirs = {}
    for customer in ("acme-local", "acme-candidate", "acme-v2"):  # their own batches, as the night writes them
        theirs[customer] = run_batch_job(production.onnx, 2, str(out / customer), 9, {"name": customer})
    file = store / "acme.onnx"
    file.write_bytes(Path(acme["2"]).read_bytes())
    assert main(["generate", "--model", str(file), "--count", "3", "--out", str(out)]) == 0
    assert main(["generate", "--customer", "acme", "--alias", "candidate", "--count", "3", "--out", str(out)]) == 0
    assert main(["generate", "--customer", "acme", "--version", "2", "--count", "3", "--out", str(out)]) == 0
    for customer, manifest in theirs.items():
        assert json.loads((out / customer / "manifest.json").read_text())["created"] == manifest["created"], customer
        assert json.loads((out / customer / "manifest.json").read_text())["model"] == {"name": customer}
        assert sorted(p.name for p in (out / customer).glob("0*.png")) == ["00000.png", "00001.png"], customer


def test_the_serving_path_imports_neither_torch_nor_mlflow_nor_prefect(acme, store):
    code = ("import sys; from flows.app.cli import main; rc = main(['generate', '--customer', 'acme', '--count', '3', "
            f"'--out', {str(store / 'out')!r}]); "
            "print(rc, sorted(m for m in ('torch', 'mlflow', 'prefect', 'dvc', 'pandas') if m in sys.modules))")
    env = os.environ | {"PYTHONPATH": str(PROJECT_ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[-2] == "0 []"


def test_models_fits_100_columns_says_whose_metrics_and_has_json(acme, store, capsys):
    for cid in ("a-customer-with-a-rather-long-identifier-that-goes-on-and-on", "beta"):
        name = model_names.customer_model_name(cid)
        mv = model_versions.register_version(name, model_versions.get_version("metagan-customer-acme", 2).source, "",
                                       {"parity_ok": "true", "consistency": "0.75"})
        model_versions.set_alias(name, model_names.CANDIDATE, mv.version)
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 100
    header, acme_row = lines[0].split(), next(line.split() for line in lines if line.startswith("acme"))
    assert header[:6] == ["customer", "vers", "prod", "cand", "prev", "from"]
    assert acme_row[:6] == ["acme", "2", "1", "2", "-", "prod"]  # production's metrics, production is 1
    beta = next(line.split() for line in lines if line.startswith("beta"))
    assert beta[5] == "cand" and "0.75" in beta
    assert any(line.startswith("meta-model metagan-meta") and "current = 1" in line for line in lines)

    assert main(["models", "--json"]) == 0
    rows = {r["model"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["metagan-customer-acme"]["metrics_of"] == {"version": "1", "from": "production"}
    assert rows["metagan-customer-acme"]["metrics"]["shot_coverage"] == 0.25
    assert rows["metagan-meta"]["aliases"] == {"current": "1"} and rows["metagan-meta"]["kind"] == "meta"


def test_a_batch_as_one_shard_holds_what_loose_pngs_hold(acme, store):
    """The shard layout (one tar, WebDataset's PNG + JSON per image) writes 4 files where loose
    PNGs write count + 3, and its images are the same bytes; its gallery embeds them."""
    from metagan.generate import run_batch_job
    from metagan.shards import read_shard

    model = serving.served_model("acme")
    loose = run_batch_job(model.onnx, 6, str(store / "png"), 4, model.describe())
    shard = run_batch_job(model.onnx, 6, str(store / "shard"), 4, model.describe(), layout="shard")
    assert sorted(p.name for p in (store / "shard").iterdir()) == ["contact-sheet.png", "images.tar", "index.html",
                                                                   "manifest.json"]
    samples = read_shard((store / "shard" / "images.tar").read_bytes())
    assert [f"{k}.png" for k, _, _ in samples] == loose["files"] == shard["files"]
    assert all(png == (store / "png" / f"{k}.png").read_bytes() for k, png, _ in samples)
    assert samples[2][2] == {"index": 2, "model": model.name, "version": model.version, "seed": 4}
    assert (store / "png" / "contact-sheet.png").read_bytes() == (store / "shard" / "contact-sheet.png").read_bytes()
    assert (store / "shard" / "index.html").read_text().count("data:image/png;base64,") == 6


def test_a_batch_written_over_another_drops_the_old_manifest_before_its_first_image(acme, store, monkeypatch):
    """Guarantee: a reader that finds a manifest finds the batch it describes. Written over an
    earlier batch, the old manifest goes before any image is replaced, so a write that fails half
    way leaves no manifest over a mix of old and new images (a probe killed one: the old manifest
    stood over new images)."""
    import pytest

    from metagan import storage
    from metagan.generate import run_batch_job

    model = serving.served_model("acme")
    run_batch_job(model.onnx, 6, str(store / "b"), 1, model.describe())
    written = []

    def failing_write(self, relative, data):
        written.append(relative)
        if len(written) == 3:
            raise OSError(28, "No space left on device")
        return str(store / "b" / relative)
    monkeypatch.setattr(storage.OutputLocation, "write", failing_write)
    with pytest.raises(OSError):
        run_batch_job(model.onnx, 6, str(store / "b"), 2, model.describe())
    assert not (store / "b" / "manifest.json").exists()


def test_a_batch_the_disk_has_no_room_for_fails_before_touching_the_earlier_batch(acme, store, monkeypatch):
    """Guarantee: a batch whose files the output folder's file system cannot hold fails (exit 6,
    saying how much it needs and has) before the earlier batch's manifest goes, so that batch stays
    published. A probe's night on a full disk unpublished every due customer's earlier batch: each
    manifest went, then the first write failed."""
    from metagan import storage
    from metagan.errors import Failure, FileSystemFault
    from metagan.generate import run_batch_job

    model = serving.served_model("acme")
    for layout in ("png", "shard"):
        out = store / f"full-{layout}"
        run_batch_job(model.onnx, 6, str(out), 1, model.describe(), layout=layout)
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        monkeypatch.setattr(storage, "free_room", lambda folder: (8 * 4096, 4096))
        said = rf"cannot write {out}: No space left on device \(the batch needs 0\.1 MB, 0\.0 MB are free; the earlier"
        with pytest.raises(FileSystemFault, match=said) as e:
            run_batch_job(model.onnx, 6, str(out), 2, model.describe(), layout=layout)
        assert e.value.kind is Failure.FILE_SYSTEM
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
        monkeypatch.setattr(storage, "free_room", lambda folder: (2**30, 4096))
        assert run_batch_job(model.onnx, 6, str(out), 2, model.describe(), layout=layout)["seed"] == 2
    monkeypatch.setattr(storage, "free_room", lambda folder: (8 * 4096, 4096))
    with pytest.raises(FileSystemFault) as e:  # a first batch: no earlier one to keep, none said (a probe)
        run_batch_job(model.onnx, 6, str(store / "first"), 1, model.describe())
    assert str(e.value).endswith("MB are free)") and not (store / "first").exists()


def test_a_batch_whose_model_stops_being_served_replaces_nothing_or_publishes_nothing(acme, store):
    """A batch asks, holding its location, whether its model is still the one served: before its
    first write (no: the earlier batch stays whole) and before its manifest (no: no manifest, so no
    reader takes the images for a batch, and the next batch there removes them)."""
    import pytest

    from metagan.generate import Superseded, run_batch_job

    model = serving.served_model("acme")
    first = run_batch_job(model.onnx, 4, str(store / "b"), 1, model.describe())
    before = {p.name: p.read_bytes() for p in (store / "b").iterdir()}
    with pytest.raises(Superseded):
        run_batch_job(model.onnx, 2, str(store / "b"), 2, model.describe(), still_served=lambda: False)
    assert {p.name: p.read_bytes() for p in (store / "b").iterdir()} == before
    answers = iter([True, False])
    with pytest.raises(Superseded):
        run_batch_job(model.onnx, 2, str(store / "b"), 3, model.describe(), still_served=lambda: next(answers))
    assert not (store / "b" / "manifest.json").exists()
    again = run_batch_job(model.onnx, 2, str(store / "b"), 4, model.describe(), still_served=lambda: True)
    assert sorted(p.name for p in (store / "b").iterdir()) == sorted(again["files"] + ["contact-sheet.png",
                                                                                      "index.html", "manifest.json"])
    assert len(first["files"]) == 4


def test_two_batches_into_one_location_take_turns(acme, store):
    """Guarantee: a batch writes its location holding that location's lock (a local folder's is a
    file beside it, whatever project the writer runs in; an S3 prefix's the profile's locker's), so
    two batches there at once (one by hand during the night's, or another project's) take turns; a
    probe's two overlapping batches left the slower one's manifest over the faster one's images."""
    import threading

    from metagan.generate import local_lock_of, run_batch_job
    from metagan.locks import file_locker

    model = serving.served_model("acme")
    out = store / "b"
    folder, name = local_lock_of(out)
    with file_locker(folder)(name):  # another writer, of any project, holds the folder
        second = threading.Thread(target=run_batch_job, args=(model.onnx, 3, str(out), 1, model.describe()))
        second.start()
        second.join(2.0)
        assert second.is_alive() and not list(out.glob("*.png")) and not (out / "manifest.json").exists()
    second.join(30)
    assert json.loads((out / "manifest.json").read_text())["seed"] == 1


def test_an_output_folder_that_cannot_be_made_is_a_file_system_fault(tmp_path):
    """Guarantee: `--out` where no folder can be made (under a file, or under /proc, which refuses
    new folders with "no such file") ends the batch with exit 6 naming the file, not as bad input."""
    from metagan.errors import Failure, FileSystemFault
    from metagan.storage import OutputLocation

    (tmp_path / "a-file").write_bytes(b"")
    for root in (tmp_path / "a-file" / "out", Path("/proc/metagan-nowhere")):
        with pytest.raises(FileSystemFault, match=f"cannot write {root}/c/0.png: ") as e:
            OutputLocation(root).write("c/0.png", b"png")
        assert e.value.kind is Failure.FILE_SYSTEM


def test_a_batch_written_over_another_removes_what_the_old_manifest_named_and_nothing_else(acme, store):
    """Guarantee: a batch that replaces another in the same folder removes the files the old
    manifest named that it did not write itself (a smaller batch: the extra images; another
    layout: the loose PNGs or the shard), so the folder holds one batch; files the manifest does
    not name (the user's own) stay. Before, a probe's 3 images over 6 left 6 PNGs beside a
    manifest naming 3, and a shard over PNGs left both."""
    from metagan.generate import run_batch_job

    model = serving.served_model("acme")
    out = store / "b"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "00042.png").write_bytes(b"the user's, named like an image")
    batch = {"contact-sheet.png", "index.html", "manifest.json"}
    run_batch_job(model.onnx, 6, str(out), 1, model.describe())
    run_batch_job(model.onnx, 3, str(out), 2, model.describe())
    assert {p.name for p in out.iterdir()} == batch | {"00000.png", "00001.png", "00002.png", "notes.txt",
                                                       "00042.png"}
    run_batch_job(model.onnx, 4, str(out), 3, model.describe(), layout="shard")
    assert {p.name for p in out.iterdir()} == batch | {"images.tar", "notes.txt", "00042.png"}
    run_batch_job(model.onnx, 2, str(out), 4, model.describe())
    assert {p.name for p in out.iterdir()} == batch | {"00000.png", "00001.png", "notes.txt", "00042.png"}
    assert json.loads((out / "manifest.json").read_text())["files"] == ["00000.png", "00001.png"]


def test_a_batch_killed_midway_leaves_the_next_one_the_list_of_files_to_remove(acme, store, monkeypatch):
    """Guarantee: a batch that fails half way over another leaves no manifest (the old one went
    first) and a record of the files the two batches may have left; the next batch removes them,
    so the folder again holds exactly what its manifest names."""
    from metagan import storage
    from metagan.generate import run_batch_job

    model = serving.served_model("acme")
    out = store / "b"
    run_batch_job(model.onnx, 6, str(out), 1, model.describe())
    real_write, written = storage.OutputLocation.write, []

    def failing_write(self, relative, data):
        written.append(relative)
        if relative == "00007.png":  # a larger batch, killed after its 8th image
            raise OSError(28, "No space left on device")
        return real_write(self, relative, data)
    monkeypatch.setattr(storage.OutputLocation, "write", failing_write)
    with pytest.raises(OSError):
        run_batch_job(model.onnx, 9, str(out), 2, model.describe())
    assert not (out / "manifest.json").exists() and (out / "00006.png").exists()
    monkeypatch.setattr(storage.OutputLocation, "write", real_write)
    run_batch_job(model.onnx, 2, str(out), 3, model.describe())
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00001.png", "contact-sheet.png", "index.html",
                                                     "manifest.json"]


def test_a_batch_removes_the_temp_files_a_killed_batch_left_of_its_files_only(acme, store):
    """Guarantee: a batch killed while writing an image (SIGKILL: no cleanup ran) left the atomic
    write's ``.00003.png.<random>.tmp`` in the customer's folder for good; the next batch removes
    such files of the names a batch writes, not a user's own dot files."""
    from metagan.generate import run_batch_job

    model = serving.served_model("acme")
    out = store / "b"
    run_batch_job(model.onnx, 6, str(out), 1, model.describe())
    left = [".00003.png.k2x_9q.tmp", ".manifest.json.a1b2c3.tmp", ".contact-sheet.png.zz.tmp"]
    for name in left:
        (out / name).write_bytes(b"half a file")
    (out / ".notes.txt.v1.tmp").write_text("the user's")
    run_batch_job(model.onnx, 2, str(out), 2, model.describe())
    assert sorted(p.name for p in out.iterdir()) == [".notes.txt.v1.tmp", "00000.png", "00001.png",
                                                     "contact-sheet.png", "index.html", "manifest.json"]


def test_a_batch_over_another_under_an_s3_prefix_removes_the_old_batchs_objects(acme, store, monkeypatch):
    """Guarantee: the same under an S3 prefix: the objects the old manifest named and the new
    batch did not write are deleted, other objects under the prefix (and beside it) stay."""
    import boto3
    from moto import mock_aws

    from metagan.generate import run_batch_job

    for var, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    model = serving.served_model("acme")
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="out")
        s3.put_object(Bucket="out", Key="acme/notes.txt", Body=b"mine")
        s3.put_object(Bucket="out", Key="acme2/00005.png", Body=b"another prefix")
        run_batch_job(model.onnx, 6, "s3://out/acme", 1, model.describe())
        run_batch_job(model.onnx, 2, "s3://out/acme", 2, model.describe(), layout="shard")
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="out")["Contents"])
    assert keys == ["acme/contact-sheet.png", "acme/images.tar", "acme/index.html", "acme/manifest.json",
                    "acme/notes.txt", "acme2/00005.png"]
def onnx_of(path, inputs, outputs, nodes, inits=()):
    """A loadable ONNX model of any interface (opset 17)."""
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_a_loadable_onnx_file_of_another_interface_is_bad_input_naming_what_differs(tmp_path):
    """`metagan generate --model FILE` with a model onnxruntime loads but that is no generator (an
    input other than float `z` of shape (N, z_dim), no output `images`, an output that is not
    (N, 1 or 3, H, W) images) is bad input naming what differs: each ended in a traceback (exit 70)
    when drawing, a two-channel one wrote LA images (probe of 2026-12-06). A generator passes."""
    from onnx import TensorProto as T
    from onnx import helper

    def value(name, kind, shape):
        return helper.make_tensor_value_info(name, kind, shape)

    to_image = helper.make_tensor("shape", T.INT64, [4], [-1, 1, 8, 8])
    two_channels = helper.make_tensor("shape", T.INT64, [4], [-1, 2, 4, 8])
    reshape = helper.make_node("Reshape", ["z", "shape"], ["images"])
    cases = {
        "input x": ([value("x", T.FLOAT, [None, 64])], [value("images", T.FLOAT, None)],
                    [helper.make_node("Reshape", ["x", "shape"], ["images"])], [to_image], "not one input 'z'"),
        "z_dim unknown": ([value("z", T.FLOAT, ["N", "D"])], [value("images", T.FLOAT, None)], [reshape], [to_image],
                          "not float of shape (N, z_dim)"),
        "integer z": ([value("z", T.INT64, [None, 64])], [value("images", T.INT64, None)],
                      [helper.make_node("Identity", ["z"], ["images"])], [], "not float of shape (N, z_dim)"),
        "no images": ([value("z", T.FLOAT, [None, 64])], [value("out", T.FLOAT, None)],
                      [helper.make_node("Reshape", ["z", "shape"], ["out"])], [to_image], "no output 'images'"),
        "flat output": ([value("z", T.FLOAT, [None, 64])], [value("images", T.FLOAT, None)],
                        [helper.make_node("Identity", ["z"], ["images"])], [], "of shape (1, 64), not float images"),
        "two channels": ([value("z", T.FLOAT, [None, 64])], [value("images", T.FLOAT, None)], [reshape], [two_channels],
                         "of shape (1, 2, 4, 8), not float images"),
    }
    for name, (inputs, outputs, nodes, inits, words) in cases.items():
        path = onnx_of(tmp_path / f"{name.replace(' ', '-')}.onnx", inputs, outputs, nodes, inits)
        with pytest.raises(BadInput, match="is not a metagan generator") as e:
            serving.local_model(path)
        assert words in str(e.value), (name, str(e.value))
    good = onnx_of(tmp_path / "good.onnx", [value("z", T.FLOAT, [None, 64])], [value("images", T.FLOAT, None)],
                   [reshape], [to_image])
    assert serving.local_model(good).name == "good"


def test_a_damaged_model_file_is_restored_from_where_the_profile_keeps_it(monkeypatch):
    """The advice for a file that fails its checksum names the artifact store the profile has: the
    project's mlflow/artifacts embedded, the tracking server's on scale-out (where it said
    "mlflow/artifacts" too: an operator probe of 2026-12-08)."""
    import hashlib

    good = hashlib.sha256(b"registered").hexdigest()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////x/mlflow/mlflow.db")
    with pytest.raises(Damaged, match="restore mlflow/artifacts from backup"):
        serving.verify_model_bytes(b"changed", good)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    with pytest.raises(Damaged, match=r"restore the tracking server's artifact store \(its bucket, "
                                      r"MLFLOW_ARTIFACTS_DESTINATION\) from backup"):
        serving.verify_model_bytes(b"changed", good)
