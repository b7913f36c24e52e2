"""params.yaml: typed, strict, validated before any work."""

import pytest

from metagan.config import PROJECT_ROOT, ConfigError, load_params


@pytest.mark.parametrize("text, message", [
    ("meta:\n  methd: reptile\n", "methd"),
    ("meta:\n  shots: five\n", "meta.shots"),
    ("adapt:\n  steps: '10'\n", "adapt.steps"),
    ("model:\n  preset: huge\n", "model.preset"),
])
def test_params_with_unknown_keys_or_wrong_types_are_rejected(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_params(path)



def test_project_params_yaml_is_valid():
    assert load_params().model.preset == "small"


def test_a_learner_checks_its_own_settings_where_it_is_built():
    """params.yaml's ``learners.<name>`` sections are each learner's own; the configuration module
    knows no learner, and an unknown method or setting fails before any work (flows.common.load)."""
    from metagan.config import ConfigError, Params
    from metagan.meta import build_learner, check_learners

    check_learners(Params())
    with pytest.raises(ConfigError, match="unknown meta-learning method 'nope'"):
        check_learners(Params().with_overrides(meta={"method": "nope"}))
    with pytest.raises(ConfigError, match="learners.reptile.inner_lr"):
        check_learners(Params().with_overrides(learners={"reptile": {"inner_lr": "fast"}}))
    with pytest.raises(ConfigError, match="learners.condgan.typo"):
        build_learner(Params().with_overrides(model={"preset": "tiny"}, meta={"method": "condgan"},
                                              learners={"condgan": {"typo": 1}}), 16, 1)


def test_checkpoints_from_before_learner_settings_keep_theirs():
    """The shipped meta-model kept condgan's settings in ``meta``: they load as its own, silently."""
    import logging

    from metagan.train import load_meta_learner

    with pytest.MonkeyPatch.context() as mp:
        records = []
        mp.setattr(logging.getLogger("metagan.config"), "warning", lambda *a, **k: records.append(a))
        learner, ckpt = load_meta_learner(PROJECT_ROOT / "metagan/pretrained/condgan-small.pt")
    assert "proto_weight" in ckpt["params"]["meta"] and "learners" not in ckpt["params"]
    assert learner.settings.proto_weight == ckpt["params"]["meta"]["proto_weight"]
    assert not any("proto_weight" in str(r) for r in records)
