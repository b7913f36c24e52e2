"""The learners, found through one registry.

Importing this package imports every module in it, and each learner registers itself
(:func:`~metagan.meta.base.register`): adding a learner is adding its module. A learner's own
settings live under ``learners.<name>`` in params.yaml and are checked by its ``Settings`` model
here, where a learner is built, so the configuration module needs to know no learner.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

from pydantic import ValidationError

from metagan.config import Params, params_from_checkpoint
from metagan.errors import ConfigError
from metagan.params_file import format_validation_error, unknown_key_said
from metagan.meta.base import REGISTRY, LearnerSettings, MetaLearner, register

if TYPE_CHECKING:
    from metagan.checkpoint import ReadCheckpoint

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def learner_class(method: str) -> type[MetaLearner]:
    if method not in REGISTRY:
        raise ConfigError(f"unknown meta-learning method {method!r}; choose one of {sorted(REGISTRY)}")
    return REGISTRY[method]


def learner_settings(params: Params, method: str | None = None) -> LearnerSettings:
    """``learners.<method>`` of params.yaml (default: ``meta.method``), checked by the learner."""
    method = method or params.meta.method
    return learner_settings_from(method, params.learners.get(method, {}))


def learner_settings_from(method: str, raw: dict) -> LearnerSettings:
    """A learner's settings from a raw ``learners.<method>`` mapping (a checkpoint's, say)."""
    return _settings(learner_class(method), raw, f"learners.{method}")


def _settings(cls: type[MetaLearner], raw: dict, where: str) -> LearnerSettings:
    try:
        return cls.Settings.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, where, cls.Settings)) from None


def check_learners(params: Params) -> None:
    """The chosen learner exists and every learner's settings are valid (entry points call this
    before any work starts)."""
    learner_class(params.meta.method)
    for method in params.learners:
        if method not in REGISTRY:  # said as the section it is (`learners.wrap`), with the learner meant
            raise ConfigError(f"invalid params: learners.{method}: {unknown_key_said(method, sorted(REGISTRY))}")
        learner_settings(params, method)


def check_warm_start(params: Params) -> ReadCheckpoint | None:
    """Meta-training has something to start from: ``meta.init_checkpoint`` is a meta checkpoint of
    this learner, or there are minutes to train. Only what may meta-train calls this (promotion,
    the batch job and serving read neither setting, and must not stop on them).

    Returns the warm start as read (None without one): the one read of its file, which the caller
    hands down (:func:`metagan.lifecycle.meta_model.train_meta_or_reuse`'s ``start``) to identify
    the meta-model and to train from."""
    from metagan.checkpoint import META_FORMAT, CheckpointError, read_checkpoint

    start = params.meta.init_checkpoint
    if start:
        path = params.resolve(start)
        if not path.is_file():
            raise ConfigError(f"meta.init_checkpoint {start}: no such file ({path})")
        try:
            found = read_checkpoint(path, META_FORMAT)
        except CheckpointError as e:  # one line already (load_checkpoint keeps torch's reason short)
            raise ConfigError(f"meta.init_checkpoint {start}: {e}") from None
        method = found.content.get("method")
        if method != params.meta.method:
            raise ConfigError(f"meta.init_checkpoint {start} is a {method} model; this run trains "
                              f"{params.meta.method} (set meta.method: {method}, or another checkpoint)")
        return found
    if learner_class(params.meta.method).trains and params.meta.minutes == 0:
        raise ConfigError(f"meta.minutes is 0 and meta.init_checkpoint is not set: {params.meta.method} would "
                          "register an untrained meta-model; give it minutes, or a checkpoint to start from")
    return None


def meta_training_trains(params: Params) -> bool:
    """Whether meta-training changes any weight: a learner with something to train, given minutes
    (``meta.minutes: 0`` registers ``meta.init_checkpoint`` as it is)."""
    return learner_class(params.meta.method).trains and params.meta.minutes > 0


def build_learner(params: Params, image_size: int, channels: int, device: str = "cpu") -> MetaLearner:
    """A new learner of ``meta.method`` for images of this size, with its settings and networks."""
    cls = learner_class(params.meta.method)
    settings = learner_settings(params)
    return cls(cls.net_config(params.model.preset, image_size, channels, settings), params.meta, settings, device)


def load_learner(ckpt: dict, device: str = "cpu") -> MetaLearner:
    """The learner a meta checkpoint holds, rebuilt as it was saved."""
    cls = learner_class(ckpt["method"])
    params = params_from_checkpoint(ckpt["params"])
    learner = cls(cls.net_config_from_dict(ckpt["net"]), params.meta, _saved_settings(cls, ckpt), device)
    learner.load_state_dict(ckpt["state"])
    return learner


def _saved_settings(cls: type[MetaLearner], ckpt: dict) -> LearnerSettings:
    """The settings a checkpoint was trained with. Checkpoints from before learners had settings of
    their own kept them in the ``meta`` section; those keys are taken from there."""
    raw = dict(ckpt["params"].get("learners", {}).get(cls.name, {}))
    if not raw:
        legacy = ckpt["params"].get("meta", {})
        raw = {k: legacy[k] for k in cls.Settings.model_fields if k in legacy}
    return _settings(cls, raw, f"checkpoint learners.{cls.name}")


__all__ = ["REGISTRY", "LearnerSettings", "MetaLearner", "build_learner", "check_learners", "learner_class",
           "learner_settings", "learner_settings_from", "load_learner", "register"]
