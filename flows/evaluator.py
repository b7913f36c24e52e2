"""``register_evaluator``: version the quality evaluator in the registry as ``metagan-evaluator``."""

from __future__ import annotations

from prefect import flow, task

from metagan import meta_lifecycle
from metagan.config import Params
from metagan.meta_lifecycle import EvaluatorRegistration


@task
def register_evaluator_file(params: Params) -> EvaluatorRegistration:
    return meta_lifecycle.register_evaluator(params)


@flow(name="register-evaluator")
def register_evaluator(params: Params) -> EvaluatorRegistration:
    return register_evaluator_file(params)
