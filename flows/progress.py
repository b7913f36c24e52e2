"""Progress on the console for the long steps: meta-training (step, losses, share of the budget,
time left), the adapt fan-out (customers done of all) and generation (images written).

The application opens one live display around a command (:func:`display`, ``flows/app/cli.py``);
flows and tasks report into whatever display is open (:func:`bar`), and into nothing when none is:
a deployment's run, a test, ``--quiet``, output that is not a terminal. Updates are thread-safe
(tasks run in worker threads). Run logs are separate: they go to Prefect (``get_run_logger``)
whether or not a display is open. No Prefect import here: ``metagan generate`` uses this without
Prefect.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from metagan.config import Params

_lock = threading.Lock()
_progress = None  # the open rich.progress.Progress, if any


@contextmanager
def display(enabled: bool = True, console=None) -> Iterator[None]:
    """Show the bars of everything reported inside the block (on stderr, or ``console``)."""
    global _progress
    if not enabled:
        yield
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    progress = Progress(TextColumn("{task.description:<16}"), BarColumn(bar_width=24), TaskProgressColumn(),
                        TextColumn("{task.fields[count]}"), TimeElapsedColumn(), TextColumn("left"),
                        TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                        console=console or Console(stderr=True), refresh_per_second=4)
    with _lock:
        _progress = progress
    try:
        with progress:
            yield
    finally:
        with _lock:
            _progress = None


def showing() -> bool:
    return _progress is not None


class Bar:
    """One bar of the open display (or nothing, when none is open)."""

    def __init__(self, description: str, total: float | None):
        self._progress = _progress
        self._task = None if self._progress is None else self._progress.add_task(
            description, total=total, count="", status="")

    def update(self, completed: float | None = None, advance: float | None = None, count: str | None = None,
               status: str | None = None) -> None:
        if self._task is None:
            return
        fields = {k: v for k, v in (("count", count), ("status", status)) if v is not None}
        self._progress.update(self._task, completed=completed, advance=advance, **fields)

    def finish(self) -> None:
        if self._task is not None:
            task = self._progress.tasks[self._task]
            if task.total is not None:
                self._progress.update(self._task, completed=task.total)
            self._progress.stop_task(self._task)


def bar(description: str, total: float | None) -> Bar:
    return Bar(description, total)


def counter(description: str, total: int) -> Callable[[int], None]:
    """A bar counting ``done`` of ``total`` (customers, images): call it with the count done so far."""
    b = bar(description, total)
    b.update(completed=0, count=f"0/{total}")

    def done(n: int) -> None:
        b.update(completed=n, count=f"{n}/{total}")
        if n >= total:
            b.finish()

    return done


LOSS_NAMES = ("d_loss", "g_loss", "loss")


def meta_training(params: Params, log: Callable[[str], None] | None = None,
                  log_every_s: float = 30.0) -> Callable[[str, float, int], None]:
    """A ``report(name, value, step)`` callback for :func:`metagan.train.meta_train`: the bar shows
    the step, the latest losses and how much of the budget is spent (``meta.max_steps`` or
    ``meta.minutes``, whichever ends first), from which rich estimates the time left; ``log`` gets
    the same line every ``log_every_s`` seconds (the run log in Prefect's UI)."""
    budget_s, max_steps = params.meta.minutes * 60, params.meta.max_steps
    bars: list[Bar] = []  # opened by the first report: a reused meta-model shows none
    start = last_log = time.monotonic()
    latest: dict[str, float] = {}

    def report(name: str, value: float, step: int) -> None:
        nonlocal last_log
        if not bars:
            bars.append(bar("meta-training", 1000))
        b = bars[0]
        latest[name] = float(value)
        now = time.monotonic()
        spent = max((now - start) / budget_s if budget_s else 0.0, step / max_steps if max_steps else 0.0)
        losses = "  ".join(f"{k} {v:.3g}" for k, v in sorted(latest.items()) if k.endswith(LOSS_NAMES))
        b.update(completed=min(spent, 1.0) * 1000, count=f"step {step}", status=losses)
        if log is not None and now - last_log >= log_every_s:
            last_log = now
            log(f"meta-training step {step}, {100 * min(spent, 1.0):.0f}% of the budget: {losses}")

    report.finish = lambda: [b.finish() for b in bars]  # type: ignore[attr-defined]
    return report
