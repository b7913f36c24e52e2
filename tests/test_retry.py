import pytest

from metagan import retry
from metagan.retry import RetryPolicy, ServiceUnavailable, call_with_retries


def test_backoff_doubles_up_to_the_cap_and_the_last_failure_names_the_operation(monkeypatch):
    slept = []
    monkeypatch.setattr(retry.time, "sleep", slept.append)
    calls = []

    def down():
        calls.append(1)
        raise ConnectionError("refused")

    policy = RetryPolicy(attempts=5, backoff_s=1.0, max_backoff_s=3.0)
    with pytest.raises(ServiceUnavailable, match=r"S3 unavailable: write x failed 5 time\(s\).*refused"):
        call_with_retries(down, "write x", policy, lambda e: isinstance(e, ConnectionError), service="S3")
    assert len(calls) == 5 and slept == [1.0, 2.0, 3.0, 3.0]


def test_a_non_transient_error_is_raised_at_once_and_a_recovery_returns():
    calls = []

    def bad():
        calls.append(1)
        raise PermissionError("denied")

    with pytest.raises(PermissionError):
        call_with_retries(bad, "x", RetryPolicy(attempts=5, backoff_s=0), lambda e: isinstance(e, ConnectionError))
    assert len(calls) == 1
    flaky = iter([ConnectionError("blip"), "ok"])

    def once():
        v = next(flaky)
        if isinstance(v, Exception):
            raise v
        return v

    assert call_with_retries(once, "x", RetryPolicy(backoff_s=0), lambda e: True) == "ok"


def test_policy_from_the_environment_is_validated(monkeypatch):
    monkeypatch.setenv("METAGAN_MLFLOW_ATTEMPTS", "2")
    monkeypatch.setenv("METAGAN_MLFLOW_TIMEOUT_S", "1.5")
    assert RetryPolicy.from_env("mlflow") == RetryPolicy(attempts=2, timeout_s=1.5)
    monkeypatch.setenv("METAGAN_MLFLOW_ATTEMPTS", "0")
    with pytest.raises(ValueError, match="METAGAN_MLFLOW_ATTEMPTS must be a whole number >= 1, got '0'"):
        RetryPolicy.from_env("mlflow")
    monkeypatch.setenv("METAGAN_MLFLOW_ATTEMPTS", "many")
    with pytest.raises(ValueError, match="METAGAN_MLFLOW_ATTEMPTS must be a whole number >= 1, got 'many'"):
        RetryPolicy.from_env("mlflow")
