"""metagan as a user installs it: the wheel, in a fresh virtual environment, run from another folder
on a project folder of colour 64x64 images. The defaults, the meta-model and the evaluator come
from the package; everything the run writes goes to the project; the run's INFO logs and its
tables reach the Prefect server while the console stays calm.

No network: the wheel is built with the build dependencies already installed
(``--no-build-isolation``) and installed without its dependencies (``--no-deps``); the new
environment sees this one's packages (torch, MLflow, Prefect...) through a ``.pth`` file, and
metagan only from the wheel.
"""

import io
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from metagan.config import PROJECT_ROOT
from metagan.shards import read_shard
from tests.projects import write_rgb_project


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel built from this checkout installed; returns its bin/."""
    work = tmp_path_factory.mktemp("wheel")
    checkout = work / "checkout"  # what `git clone` would give: the packages, the metadata
    for name in ("metagan", "flows"):
        shutil.copytree(PROJECT_ROOT / name, checkout / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT_ROOT / name, checkout / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(work / "dist"), str(checkout)], check=True, capture_output=True)
    (wheel,) = (work / "dist").glob("metagan-*.whl")
    env = work / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(env)], check=True)
    (site,) = (env / "lib").glob("python*/site-packages")
    # this environment's packages, after the new one's own (a path in a .pth file: the editable
    # metagan of this environment, installed by a .pth of its own, is not picked up)
    (site / "deps-of-the-test-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(env / "bin/python"), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", str(wheel)], check=True, capture_output=True)
    return env / "bin"


def clean_env(**extra: str) -> dict[str, str]:
    drop = ("MLFLOW_", "METAGAN_", "PREFECT_", "PYTHONPATH")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)} | extra


def test_the_installed_package_has_its_defaults_meta_model_and_evaluator(installed, tmp_path):
    code = ("import metagan, flows; from metagan.config import load_params, SHIPPED_PARAMS; p = load_params(); "
            "print(metagan.__file__); print(flows.__file__); "
            "print(p.adapt.steps_for(5), p.adapt.negatives, p.adapt.mode_seeking); "
            "print(p.resolve(p.paths.evaluator)); print(p.resolve(p.data.sample)); print(p.resolve('mlflow'))")
    out = subprocess.run([str(installed / "python"), "-c", code], cwd=tmp_path, env=clean_env(),
                         capture_output=True, text=True, check=True).stdout.splitlines()
    site = str(installed.parent / "lib")
    assert out[0].startswith(site) and out[1].startswith(site)  # the wheel's, not this checkout's
    assert out[2] == "20 8 0.2"  # the shipped params.yaml, not the code's defaults
    assert out[3].startswith(site) and Path(out[3]).is_file()  # the shipped evaluator
    assert out[4].startswith(site) and Path(out[4]).is_file()
    assert out[5] == str(tmp_path / "mlflow")  # the project's files go to the project


def test_a_wrong_params_path_is_an_error(installed, tmp_path):
    proc = subprocess.run([str(installed / "metagan"), "models", "--params", str(tmp_path / "nope.yaml")],
                          cwd=tmp_path, env=clean_env(), capture_output=True, text=True)
    assert proc.returncode == 3 and proc.stderr.strip() == f"error: params file {tmp_path / 'nope.yaml'} does not exist"


def test_a_colour_64px_pipeline_from_another_folder_with_logs_and_tables_in_prefect(installed, tmp_path,
                                                                                    prefect_harness):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime, LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_URL
    from prefect.types import DateTime

    project = write_rgb_project(tmp_path / "project")
    (project / "params.yaml").write_text(yaml.safe_dump({
        "data": {"source": "tasks", "image_size": 64, "channels": 3, "val_groups": ["g2"], "tune_groups": []},
        "model": {"preset": "tiny"},
        "meta": {"max_steps": 3, "meta_batch": 2, "shots": 3, "queries": 2, "minutes": 1.0, "sample_every": 2}}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    started = DateTime.now("UTC")
    proc = subprocess.run([str(installed / "metagan"), "--project", str(project), "pipeline", "--customers",
                           str(project / "uploads"), "--count", "6"], cwd=elsewhere, capture_output=True, text=True,
                          env=clean_env(PREFECT_API_URL=PREFECT_API_URL.value(), METAGAN_FANOUT_WORKERS="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])

    # colour images through ingest, meta-training, adaptation, export, parity and generation
    assert [a["ok"] for a in summary["adapted"]] == [True, True]
    for p in summary["promoted"]:  # the gate says which checks it could not run
        assert p["outcome"] == "promoted" and "not checked: consistency, copy rate, diversity" in p["reason"]
    first = {}
    for cid in ("red", "blue"):  # the pipeline's batch: one shard (fleet.batch_format) beside the sheet
        key, png, _ = read_shard((project / "out/generated" / cid / "images.tar").read_bytes())[0]
        first[cid] = img = Image.open(io.BytesIO(png))
        assert key == "00000" and img.mode == "RGB" and img.size == (64, 64)
        assert (project / "out/generated" / cid / "contact-sheet.png").exists()
    assert np.asarray(first["red"]).std(axis=2).mean() > 0  # not grey
    # everything the run wrote is in the project; nothing next to the package or where it ran
    assert (project / "mlflow/mlflow.db").is_file() and (project / "data.dvc").is_file()
    assert list(elsewhere.iterdir()) == [] and not list(installed.parent.glob("lib/python*/site-packages/mlflow.db"))

    # a calm console: no INFO lines, no tracebacks (warnings about the evaluator's format are fine)
    assert "INFO" not in proc.stderr and "Traceback" not in proc.stderr

    # ...while the run logs at INFO and the tables are on the Prefect server
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=started)))
        by_name = {client.read_flow(r.flow_id).name: r for r in runs}
        assert {"pipeline", "ingest", "meta-train", "adapt-customers", "promote", "generate"} <= set(by_name)
        for _ in range(20):  # logs are shipped in batches, shortly after the run
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[r.id for r in runs])))
            if any("data version" in log.message for log in logs):
                break
            time.sleep(0.5)
        info = [log.message for log in logs if log.level == 20]
        assert any("data version" in m for m in info) and any("customer red: version 1" in m for m in info)
        ours = {r.id for r in runs}
        artifacts = {a.key: a for a in client.read_artifacts() if a.key and a.flow_run_id in ours}
        assert {"adapt-customers", "promotion", "pipeline-summary"} <= set(artifacts)
        table = json.loads(artifacts["promotion"].data) if isinstance(artifacts["promotion"].data, str) \
            else artifacts["promotion"].data
        assert {row["customer"] for row in table} >= {"red", "blue"}
