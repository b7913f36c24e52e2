"""params.yaml: typed, strict, validated before any work."""

import pytest

from metagan.config import PROJECT_ROOT, load_params
from metagan.errors import ConfigError


@pytest.mark.parametrize("text, message", [
    ("meta:\n  methd: reptile\n", "methd"),
    ("meta:\n  shots: five\n", "meta.shots"),
    ("adapt:\n  steps: '10'\n", "adapt.steps"),
    ("model:\n  preset: huge\n", "model.preset"),
    ("paths:\n  generated: S3://bucket/x\n", "paths.generated: .*'S3://bucket/x'.*lowercase"),
    ("scaleout:\n  generated: s3://\n", "scaleout.generated: .*'s3://': no bucket"),
])
def test_params_with_unknown_keys_or_wrong_types_are_rejected(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_params(path)



def test_an_unknown_key_names_the_known_key_closest_to_it_one_line_each(tmp_path):
    """`schedule:` for `schedules:` said "schedule: Extra inputs are not permitted (got {...})", the
    whole section repeated (an operator probe): each unknown key is now one line naming the key meant,
    at any depth, in a learner's own section too."""
    from metagan.config import Params
    from metagan.meta import check_learners

    path = tmp_path / "params.yaml"
    path.write_text("schedule:\n  hourly_adapt: '0 * * * *'\nmeta:\n  minuts: 1\n  zzz: 1\n")
    with pytest.raises(ConfigError) as e:
        load_params(path)
    lines = str(e.value).splitlines()
    assert lines[0] == "invalid params: 3 problem(s)" and len(lines) == 4
    assert "  schedule: unknown key, did you mean `schedules`?" in lines
    assert "  meta.minuts: unknown key, did you mean `minutes`?" in lines
    zzz = next(line for line in lines if "meta.zzz" in line)
    assert zzz.startswith("  meta.zzz: unknown key (known here: class_rotations, device, ")
    with pytest.raises(ConfigError, match=r"^invalid params: 1 problem\(s\)\n  learners.reptile.inner_l: unknown key, "
                                          "did you mean `inner_lr`\\?$"):
        check_learners(Params().with_overrides(learners={"reptile": {"inner_l": 0.1}}))
    with pytest.raises(ConfigError, match="learners.wrap: unknown key, did you mean `warp`"):
        check_learners(Params().with_overrides(learners={"wrap": {}}))


def test_the_init_template_names_the_shipped_meta_model_docs_deploy_tells_to_start_from(tmp_path):
    """docs/DEPLOY.md tells the operator to set `meta.init_checkpoint` to the shipped meta-model; the
    params.yaml `metagan init` writes (the shipped defaults) has it, commented out, under `meta:`, and
    uncommented it loads and names the installed file."""
    from metagan.config import SHIPPED_META_MODEL, SHIPPED_PARAMS

    text = SHIPPED_PARAMS.read_text()
    meta_section = text.split("\nmeta:\n")[1].split("\nlearners:")[0]
    assert "  # init_checkpoint: metagan/pretrained/warp-small.pt\n" in meta_section
    path = tmp_path / "params.yaml"
    path.write_text(text.replace("  # init_checkpoint:", "  init_checkpoint:"))
    params = load_params(path)
    assert params.resolve(params.meta.init_checkpoint).resolve() == SHIPPED_META_MODEL.resolve()


def test_project_params_yaml_is_valid():
    assert load_params().model.preset == "small"


def test_a_learner_checks_its_own_settings_where_it_is_built():
    """params.yaml's ``learners.<name>`` sections are each learner's own; the configuration module
    knows no learner, and an unknown method or setting fails before any work (flows.common.load)."""
    from metagan.config import Params
    from metagan.errors import ConfigError
    from metagan.meta import build_learner, check_learners

    check_learners(Params())
    with pytest.raises(ConfigError, match="unknown meta-learning method 'nope'"):
        check_learners(Params().with_overrides(meta={"method": "nope"}))
    with pytest.raises(ConfigError, match="learners.reptile.inner_lr"):
        check_learners(Params().with_overrides(learners={"reptile": {"inner_lr": "fast"}}))
    with pytest.raises(ConfigError, match="learners.condgan.typo"):
        build_learner(Params().with_overrides(model={"preset": "tiny"}, meta={"method": "condgan"},
                                              learners={"condgan": {"typo": 1}}), 16, 1)


def test_checkpoints_from_before_learner_settings_keep_theirs(meta_ckpt, tmp_path):
    """Meta-models written before learners had their own section (condgan's shipped until
    2026-12-05) kept their settings in ``meta``: they load as the learner's own, silently."""
    import logging

    import torch

    from metagan.train import load_meta_learner

    legacy = torch.load(meta_ckpt, weights_only=True)
    own = legacy["params"].pop("learners").get("condgan", {}) | {"proto_weight": 0.25}
    legacy["params"]["meta"] |= own
    legacy.pop("settings", None)
    torch.save(legacy, tmp_path / "legacy.pt")
    with pytest.MonkeyPatch.context() as mp:
        records = []
        mp.setattr(logging.getLogger("metagan.config"), "warning", lambda *a, **k: records.append(a))
        learner, ckpt = load_meta_learner(tmp_path / "legacy.pt")
    assert "proto_weight" in ckpt["params"]["meta"] and "learners" not in ckpt["params"]
    assert learner.settings.proto_weight == 0.25
    assert not any("proto_weight" in str(r) for r in records)


@pytest.mark.parametrize("content, message", [
    (b"# r\xe9glages\nadapt:\n  steps: 5\n", r"not UTF-8 text: byte 0xe9 on line 1"),
    (b"adapt:\n  steps: 5\x01\n", r"control character 0x01 on line 2"),
    (b"? [a, b]\n: 1\n", r"a key must be a name, not a list"),
    (b"adapt:\n  ? {a: 1}\n  : 2\n", r"a key must be a name, not a dict"),
    (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", r"nested too deeply"),
], ids=["latin-1 byte", "control character", "list as key", "mapping as key", "5000 brackets"])
def test_a_params_file_yaml_cannot_read_is_bad_input_naming_the_file(tmp_path, content, message):
    """Guarantee: whatever bytes params.yaml holds, reading it fails with one ConfigError (exit 3)
    that names the file and what is wrong, never a UnicodeDecodeError, TypeError or RecursionError."""
    path = tmp_path / "params.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as caught:
        load_params(path)
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)
