"""The ``metagan`` command (flows/cli.py)."""

from flows.cli import build_parser, main
from metagan.config import meta_methods


def test_cli_adapt_without_checkpoint_names_the_command_that_makes_one(tmp_path, capsys):
    (tmp_path / "c" / "x").mkdir(parents=True)
    (tmp_path / "params.yaml").write_text(f"paths:\n  meta_checkpoint: {tmp_path / 'none.pt'}\n")
    rc = main(["--params", str(tmp_path / "params.yaml"), "adapt", "--customers", str(tmp_path / "c")])
    assert rc == 2
    assert "metagan meta-train" in capsys.readouterr().err


def test_method_choices_come_from_the_meta_learner_registry():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    method = next(a for a in sub.choices["meta-train"]._actions if a.dest == "method")
    assert method.choices == meta_methods() and {"condgan", "reptile", "fusion"} <= set(method.choices)
