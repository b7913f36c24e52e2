"""Numbers from the environment (metagan.env): every ``METAGAN_*`` number is checked in one place,
and a value that is not a finite number in its range ends the command as bad input (exit 3)
naming the variable, never as a crash (exit 70) or an endless wait."""

import os
import subprocess
import sys

import pytest

from metagan.config import PROJECT_ROOT
from metagan.errors import BadInput, ExitCode
from metagan.locks import LOCK_TIMEOUT_ENV, file_locker, lock_timeout_s
from metagan.retry import RetryPolicy

NOT_FINITE_OR_NEGATIVE = ["abc", "nan", "inf", "-inf", "1e400", "-1", "1,5"]


@pytest.mark.parametrize("raw", NOT_FINITE_OR_NEGATIVE + ["3000000"])  # above PostgreSQL's longest lock_timeout
def test_a_lock_timeout_that_is_not_a_number_of_seconds_fails_the_lock_at_once(monkeypatch, tmp_path, raw):
    """Guarantee: METAGAN_LOCK_TIMEOUT_S that is not a number, NaN, infinite or negative is
    BadInput naming the variable, raised before the lock is waited for (NaN used to wait forever)."""
    monkeypatch.setenv(LOCK_TIMEOUT_ENV, raw)
    with pytest.raises(BadInput, match=f"{LOCK_TIMEOUT_ENV} must be a number >= 0 and <= 2147483, got '{raw}'"):
        with file_locker(tmp_path)("customer-x"):
            pass


def test_a_lock_timeout_of_zero_or_unset_is_valid(monkeypatch):
    """Guarantee: 0 (try once) and a fraction are timeouts; unset or empty is the default hour."""
    monkeypatch.setenv(LOCK_TIMEOUT_ENV, "0")
    assert lock_timeout_s() == 0
    monkeypatch.setenv(LOCK_TIMEOUT_ENV, " 2.5 ")
    assert lock_timeout_s() == 2.5
    monkeypatch.setenv(LOCK_TIMEOUT_ENV, "")
    assert lock_timeout_s() == 3600


@pytest.mark.parametrize("raw", NOT_FINITE_OR_NEGATIVE)
def test_a_retry_delay_that_is_not_a_finite_number_is_bad_input(monkeypatch, raw):
    """Guarantee: the retry policy's seconds are checked as the lock's are (NaN was accepted)."""
    monkeypatch.setenv("METAGAN_S3_BACKOFF_S", raw)
    with pytest.raises(BadInput, match="METAGAN_S3_BACKOFF_S must be a number >= 0"):
        RetryPolicy.from_env("s3")


@pytest.mark.parametrize("raw", ["abc", "0", "-1", "1.5"])
def test_a_fanout_worker_count_that_is_not_a_positive_whole_number_is_bad_input(raw):
    """Guarantee: METAGAN_FANOUT_WORKERS is a whole number >= 1, or the command ends at once with
    exit 3 and one line naming the variable (it was a ValueError, exit 70, at import or at the
    fan-out)."""
    proc = subprocess.run([sys.executable, "-m", "flows.app.cli", "promote", "--customer", "x"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
                          env={**_environment(), "METAGAN_FANOUT_WORKERS": raw})
    assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr
    assert proc.stderr.strip() == f"error: METAGAN_FANOUT_WORKERS must be a whole number >= 1, got '{raw}'"


def _environment() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("METAGAN_")}


@pytest.mark.parametrize("name", [LOCK_TIMEOUT_ENV, "METAGAN_MLFLOW_ATTEMPTS", "METAGAN_INDEX_TIMEOUT_S"])
def test_a_bad_number_in_the_environment_ends_any_command_before_its_work(name):
    """Guarantee: the lock's wait and every retried service's numbers are checked as the command
    starts: exit 3, one line naming the variable, before any customer. An upgrade probe of
    2026-12-07 (METAGAN_LOCK_TIMEOUT_S=inf, which earlier metagans took) saw `metagan adapt` fail
    each customer alone, exit 1 (partial), and `promote` with nothing to move pass, exit 0."""
    proc = subprocess.run([sys.executable, "-m", "flows.app.cli", "models"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120, env={**_environment(), name: "inf"})
    assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr
    assert proc.stderr.strip().startswith(f"error: {name} must be a")

