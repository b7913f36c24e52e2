"""``register_evaluator``: version the quality evaluator in the registry as ``metagan-evaluator``."""

from __future__ import annotations

from prefect import flow, task

from metagan.lifecycle import meta_model
from metagan.config import Params
from metagan.lifecycle.meta_model import EvaluatorRegistration


@task
def register_evaluator_file(params: Params) -> EvaluatorRegistration:
    return meta_model.register_evaluator(params)


@flow(name="register-evaluator")
def register_evaluator(params: Params) -> EvaluatorRegistration:
    return register_evaluator_file(params)
