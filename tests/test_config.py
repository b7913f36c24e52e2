"""params.yaml: typed, strict, validated before any work."""

import pytest

from metagan.config import ConfigError, load_params


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
