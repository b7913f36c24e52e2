"""The GPU benchmark's script runs (at toy sizes, on the CPU) before any device time is spent on it."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_meta_throughput_reports_the_figr_reference_and_the_vmapped_reptile(tmp_path):
    out = tmp_path / "mt.json"
    subprocess.run([sys.executable, str(ROOT / "bench/meta_throughput.py"), "--device", "cpu", "--preset", "tiny",
                    "--tasks", "2", "--inner-steps", "2", "--seconds", "0.1", "--warmup", "1", "--out", str(out)],
                   check=True, capture_output=True, env={"OMP_NUM_THREADS": "1", "PATH": ""}, cwd=ROOT)
    rows = json.loads(out.read_text())["rows"]
    assert [(r["method"], r["tasks_at_once"], r["vmap"]) for r in rows] == \
        [("reptile", 1, False), ("reptile", 2, True), ("condgan", 2, False), ("warp", 2, False)]
    assert rows[0]["vs_figr_reference"] == 1.0 and all(r["tasks_per_second"] > 0 for r in rows)


def test_every_shipped_file_a_benchmark_names_is_shipped():
    """A benchmark that names a file of ``metagan/pretrained/`` (a default, a usage line) names one
    that is there: the shipped meta-model changed once and left two benchmarks pointing at nothing."""
    import re

    named = {(path.name, m) for path in [*ROOT.glob("bench/*.py"), *ROOT.glob("bench/*.sh")]
             for m in re.findall(r"metagan/pretrained/[\w.-]+\.pt", path.read_text())}
    assert named and not [(script, m) for script, m in named if not (ROOT / m).is_file()]


def test_a_mixture_row_draws_each_image_from_one_of_its_two_rows_in_the_share_asked():
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from benchlib.rows import MixGenerator

    class Constant(torch.nn.Module):
        def __init__(self, value, z_dim):
            super().__init__()
            self.value, self.z_dim = value, z_dim

        def forward(self, z):
            return torch.full((z.shape[0], 1, 2, 2), self.value)

    mix = MixGenerator(Constant(1.0, 3), Constant(-1.0, 5), share=0.3)
    out = mix(torch.randn(4000, mix.z_dim, generator=torch.Generator().manual_seed(0)))
    assert mix.z_dim == 6 and set(out.unique().tolist()) == {-1.0, 1.0}
    assert abs(float((out[:, 0, 0, 0] == 1.0).float().mean()) - 0.3) < 0.03


def test_a_row_that_changes_a_setting_the_learner_does_not_have_is_refused():
    """A misspelt (or since removed) setting once scored as the shipped model under another name."""
    import pytest

    sys.path.insert(0, str(ROOT / "bench"))
    from benchlib.rows import checkpoint_adapter
    from metagan.adapt import MetaModel
    from metagan.config import load_params

    params = load_params(ROOT / "params.yaml")
    meta = MetaModel.load(ROOT / "metagan/pretrained/warp-small.pt")
    with pytest.raises(SystemExit, match="no setting no_such_setting"):
        checkpoint_adapter(meta, params, {"no_such_setting": 0.25})
    checkpoint_adapter(meta, params, {"crisp": 4, "truncation": 0.9})
    assert meta.learner.settings.crisp == 4.0
