"""``register_evaluator``: version the quality evaluator in the registry as ``metagan-evaluator``."""

from __future__ import annotations

from prefect import flow, task

from flows.common import load
from metagan import tracking
from metagan.config import Params
from metagan.files import sha256_file


@task
def register_evaluator_file(params: Params) -> dict:
    path = params.resolve(params.paths.evaluator)
    if not path.exists():
        return {"registered": False, "reason": f"no evaluator at {path} (python bench/build_pretrained.py makes one)"}
    sha = sha256_file(path)
    existing = tracking.find_version(tracking.EVALUATOR_MODEL, {"sha256": sha})
    if existing is not None:
        return {"registered": True, "version": str(existing.version), "reused": True}
    with tracking.start_run("register-evaluator", {"step": "evaluator"}) as run:
        tracking.log_file(path, "evaluator")
        mv = tracking.register_artifact(tracking.EVALUATOR_MODEL, run, "evaluator",
                                        {"sha256": sha, "code_version": tracking.code_version()})
    tracking.set_alias(tracking.EVALUATOR_MODEL, "current", mv.version)
    return {"registered": True, "version": str(mv.version), "reused": False}


@flow(name="register-evaluator")
def register_evaluator(params_path: str | None = None, overrides: dict | None = None) -> dict:
    return register_evaluator_file(load(params_path, overrides))
