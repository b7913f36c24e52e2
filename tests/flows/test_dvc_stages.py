"""``dvc repro`` on the repository's dvc.yaml, in a throwaway checkout: every stage writes its
declared outputs whether it trains or reuses, a rerun does nothing it need not, a parameter change
or a rollback outside DVC reruns exactly what depends on it, and the metrics read well."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from metagan.config import PROJECT_ROOT
from tests.projects import make_project

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def checkout(tmp_path_factory, prefect_harness):
    """A project holding the code the stages run and depend on (as a checkout does), the
    repository's dvc.yaml, a tiny params.yaml and two ingested customers."""
    from prefect.settings import PREFECT_API_URL

    root = tmp_path_factory.mktemp("checkout")
    make_project(root, {"alpha": 140, "beta": 120}, dvc_remote=str(root.parent / f"{root.name}-remote"),
                 paths={"generated": str(root / "out/generated")})  # where dvc.yaml expects the batch
    for package in ("metagan", "flows"):
        shutil.copytree(PROJECT_ROOT / package, root / package, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pt", "sample_data"))
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "METAGAN_PROJECT"))} | {
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PREFECT_API_URL": PREFECT_API_URL.value(),
        "DVC_SITE_CACHE_DIR": str(root / ".dvc-site-cache"), "METAGAN_FANOUT_WORKERS": "2"}
    metagan(root, env, "ingest", "--customers", str(root / "uploads"))
    return root, env


def metagan(root: Path, env: dict, *args: str) -> str:
    proc = subprocess.run([str(BIN / "metagan"), *args], cwd=root, env=env, capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: the broken customer was rejected
    return proc.stdout


def repro(root: Path, env: dict, *args: str) -> set[str]:
    """``dvc repro``; returns the stages that ran."""
    proc = subprocess.run([str(BIN / "dvc"), "repro", *args], cwd=root, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage")}


def read(root: Path, path: str):
    return json.loads((root / path).read_text())


def test_repro_twice_after_a_change_and_after_a_rollback(checkout):
    root, env = checkout
    assert repro(root, env) == {"meta_train", "adapt", "production", "generate"}
    for out in ("artifacts/meta/checkpoint.pt", "artifacts/meta/metrics.json", "artifacts/meta/history.csv",
                "artifacts/adapt/models.json", "artifacts/adapt/metrics.json", "artifacts/production.json"):
        assert (root / out).exists(), out
    assert read(root, "artifacts/production.json") == {"alpha": "1", "beta": "1"}
    assert read(root, "out/generated/alpha/manifest.json")["model"]["version"] == "1"

    # nothing changed: only the registry snapshot runs (and finds the same production versions)
    assert repro(root, env) == {"production"}
    # forced, meta-training reuses the registered model and still writes its metrics and plots
    metrics = (root / "artifacts/meta/metrics.json").read_text()
    assert repro(root, env, "-f", "meta_train") == {"meta_train"}
    assert (root / "artifacts/meta/metrics.json").read_text() == metrics

    # a parameter of adaptation: new candidates, promoted, and a new batch from them
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["adapt"]["steps"] = 4
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    assert repro(root, env) == {"adapt", "production", "generate"}
    assert read(root, "artifacts/production.json") == {"alpha": "2", "beta": "2"}
    assert read(root, "out/generated/alpha/manifest.json")["model"]["version"] == "2"

    # a rollback outside DVC changes what the batch is drawn from: generate reruns
    metagan(root, env, "rollback", "--customer", "alpha")
    assert repro(root, env) == {"production", "generate"}
    assert read(root, "out/generated/alpha/manifest.json")["model"]["version"] == "1"


def test_metrics_read_well_in_dvc_metrics_show(checkout):
    root, env = checkout
    if not (root / "artifacts/adapt/metrics.json").exists():
        repro(root, env)
    proc = subprocess.run([str(BIN / "dvc"), "metrics", "show", "--json"], cwd=root, env=env, capture_output=True,
                          text=True, check=True)
    shown = next(iter(json.loads(proc.stdout).values()))["data"]
    adapt = shown["artifacts/adapt/metrics.json"]["data"]
    assert adapt["customers"] == 2 and adapt["failed"] == 0 and "shot_coverage" in adapt["mean"]
    assert "alpha" not in json.dumps(adapt)  # one line per run, not one column per customer
    assert {"d_loss", "steps"} <= set(shown["artifacts/meta/metrics.json"]["data"])  # and the learner's own losses


def test_a_change_to_a_metric_module_reruns_adaptation(checkout):
    """The stages depend on the code they run (tests/test_dvc_deps.py checks the list against the imports)."""
    root, env = checkout
    if not (root / "artifacts/adapt/models.json").exists():
        repro(root, env)
    metric = root / "metagan" / "metric_registry.py"
    original = metric.read_text()
    metric.write_text(original + "\n# a metric changed\n")
    try:
        proc = subprocess.run([str(BIN / "dvc"), "status", "--json"], cwd=root, env=env, capture_output=True,
                              text=True, check=True)
        changed = set(json.loads(proc.stdout))
    finally:
        metric.write_text(original)
    assert {"meta_train", "adapt", "generate"} <= changed
