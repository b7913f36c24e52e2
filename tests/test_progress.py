"""Progress bars (flows/progress.py): meta-training shows its step, losses and time left; a fan-out
counts customers; nothing is drawn when no display is open (a deployment's run, --quiet)."""

import io

from rich.console import Console

from flows import progress
from metagan.config import Params


def test_meta_training_shows_step_losses_and_budget_and_logs_a_line():
    out, logged = io.StringIO(), []
    params = Params().with_overrides(meta={"minutes": 10.0, "max_steps": 100})
    with progress.display(console=Console(file=out, force_terminal=True, width=150)):
        report = progress.meta_training(params, logged.append, log_every_s=0.0)
        for step in (10, 20, 50):
            report("d_loss", 0.5 / step, step)
            report("g_loss", 1.25, step)
        report.finish()
    text = out.getvalue()
    assert "meta-training" in text and "step 50" in text and "g_loss 1.25" in text and "left" in text
    assert logged and "step 50, 50% of the budget" in logged[-1]


def test_a_counter_counts_and_nothing_is_drawn_without_a_display():
    out = io.StringIO()
    with progress.display(console=Console(file=out, force_terminal=True, width=120)):
        done = progress.counter("adapting", 3)
        for n in (1, 2, 3):
            done(n)
    assert "adapting" in out.getvalue() and "3/3" in out.getvalue()
    assert not progress.showing()
    progress.counter("generating", 2)(2)  # no display open: a no-op, not an error
    report = progress.meta_training(Params())
    report("d_loss", 1.0, 10)
    report.finish()


def test_quiet_or_no_terminal_means_no_bars(monkeypatch):
    from flows.app.cli import _show_progress, build_parser

    monkeypatch.delenv("METAGAN_PROGRESS", raising=False)
    assert not _show_progress(build_parser().parse_args(["models", "-q"]))
    monkeypatch.setenv("METAGAN_PROGRESS", "1")
    assert _show_progress(build_parser().parse_args(["models"]))
