"""Two ``metagan adapt`` processes started together (an hourly schedule firing while a manual run
goes on), for the overlapping-run tests of both profiles (tests/faults, tests/scaleout).

Run 1 uploads ``ovA`` (character 140) and ``ovB`` (character 130); run 2 the same ``ovA`` and a
*different* ``ovB`` (character 120).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from metagan.config import Params

from tests.projects import write_uploads

RUN_UPLOADS = ({"ovA": 140, "ovB": 130}, {"ovA": 140, "ovB": 120})


def write_overlap_uploads(root: Path) -> list[Path]:
    folders = []
    for i, customers in enumerate(RUN_UPLOADS, 1):
        folders.append(write_uploads(root / f"overlap-{i}", customers, broken=False))
    return folders


def start_adapt(params_path: Path, customers: Path, env: dict, cwd: Path, tag: str) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | env | {
        "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_HOME": str(cwd / f".prefect-{tag}")}
    return subprocess.Popen([sys.executable, "-m", "flows.app.cli", "--params", str(params_path), "adapt", "--customers",
                             str(customers)], cwd=cwd, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def run_together(params_path: Path, folders: list[Path], env: dict, cwd: Path, timeout: float = 600):
    """Both runs, started at once; returns [(returncode, stdout, stderr)] and the wall time."""
    start = time.monotonic()
    procs = [start_adapt(params_path, f, env, cwd, f"run{i}") for i, f in enumerate(folders, 1)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        outs.append((p.returncode, out, err))
    return outs, time.monotonic() - start


def reported(stdout: str) -> dict[str, tuple[str, str]]:
    """customer -> (version, state) from lines like ``  ovB: version 2 (new), production``."""
    return {m[0]: (m[1], m[2]) for m in re.findall(r"^\s+(\w+): version (\d+) \(\w+\), (.*)$", stdout, re.M)}


def _last_ingested_hash(customer_id: str) -> str | None:
    """The content hash of the uploads the fleet index says were ingested last (embedded profile;
    None where this process does not read the run's index)."""
    import os

    from metagan.fleet_index import registry_index

    if not os.environ.get("MLFLOW_TRACKING_URI", "").startswith("sqlite") or os.environ.get("METAGAN_INDEX_URL"):
        return None
    row = registry_index().row(customer_id)
    return row.uploads_hash if row is not None else None


def check_outcome(folders: list[Path], outs, image_size: int | None = None) -> dict:
    """The guarantees of docs/RELIABILITY.md for two overlapping runs, checked on the registry."""
    from metagan import model_names, model_versions
    from metagan.uploads import load_customer_uploads

    for rc, out, err in outs:
        assert rc == 0, out[-2000:] + err[-4000:]
    reports = [reported(out) for _, out, _ in outs]
    assert all(r.keys() == {"ovA", "ovB"} for r in reports), reports

    # the same uploads in both runs: exactly one version, serving, nothing stale in `previous`
    name = model_names.customer_model_name("ovA")
    (only,) = model_versions.search_versions(f"name='{name}'")
    assert {r["ovA"][0] for r in reports} == {str(only.version)}
    aliases = {a: str(model_versions.get_alias(name, a).version) for a in ("candidate", "production")}
    assert aliases == {"candidate": str(only.version), "production": str(only.version)}
    assert model_versions.get_alias(name, "previous") is None

    # one id, different uploads: one version per run, each built from what that run ingested
    name = model_names.customer_model_name("ovB")
    versions = {str(v.version): v for v in model_versions.search_versions(f"name='{name}'")}
    assert len(versions) == 2
    for folder, report in zip(folders, reports):
        own = load_customer_uploads(folder / "ovB", image_size or Params().data.image_size, 1).content_hash
        assert versions[report["ovB"][0]].tags["content_hash"] == own
    # production (and candidate) on the version of the uploads ingested last (the fleet index's
    # record of them, where this process can read it): the other run's version is never promoted
    # after it, whichever registered last
    production = str(model_versions.get_alias(name, "production").version)
    candidate = str(model_versions.get_alias(name, "candidate").version)
    assert candidate == production and production in versions, {"candidate": candidate, "production": production,
                                                                 "reports": reports}
    last = _last_ingested_hash("ovB")
    assert last is None or versions[production].tags["content_hash"] == last, reports
    (other,) = set(versions) - {production}
    previous = model_versions.get_alias(name, "previous")
    assert previous is None or str(previous.version) == other
    states = {r["ovB"][0]: r["ovB"][1] for r in reports}
    assert states[production] == "production"
    if previous is not None:  # promoted before the other run ingested, then replaced
        assert states[other] == "production", states
    else:  # superseded: a later run's candidate, or adapted from uploads older than the last ingested
        assert "a later run" in states[other] or "older than the customer's last ingested" in states[other], states
    return {"ovB_versions": sorted(versions, key=int), "previous": None if previous is None else str(previous.version),
            "states": states}
