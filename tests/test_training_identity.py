"""What a meta checkpoint records about its training data, across resumes and warm starts."""

import dataclasses

from metagan.checkpoint import META_FORMAT, load_checkpoint
from metagan.train import meta_train


def test_a_run_is_not_resumed_on_other_data(tiny_params, tiny_dataset, tmp_path):
    path = tmp_path / "m.pt"
    meta_train(tiny_params.with_overrides(meta={"max_steps": 2}), tiny_dataset, path)
    other = dataclasses.replace(tiny_dataset, images=255 - tiny_dataset.images)  # same shapes, other drawings
    result = meta_train(tiny_params.with_overrides(meta={"max_steps": 3}), other, path, resume=True)
    assert result.steps == 3  # trained from step 0 on the new data, not continued from step 2


def test_train_groups_accumulate_over_warm_starts(tiny_params, tiny_dataset, tmp_path):
    first = tmp_path / "first.pt"
    meta_train(tiny_params.with_overrides(data={"val_groups": ["g3", "g2"]}), tiny_dataset, first)
    assert "g2" not in load_checkpoint(first, META_FORMAT)["train_groups"]
    # the warm start trains on g1 and g2; g0, which only the first run saw, stays recorded
    second = tmp_path / "second.pt"
    meta_train(tiny_params.with_overrides(meta={"init_checkpoint": str(first)}, data={"val_groups": ["g3", "g0"]}),
               tiny_dataset, second)
    groups = load_checkpoint(second, META_FORMAT)["train_groups"]
    assert groups == ["g0", "g1", "g2"]
