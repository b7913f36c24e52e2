"""Bounded retries with exponential backoff for calls to remote services (MLflow, S3).

A service that is down for a while (a restart, a network blip) is retried; one that stays down
fails with a :class:`ServiceUnavailable` that names the operation, the number of attempts and
the time spent, instead of hanging or failing on the first refused connection.

The policy comes from the environment, so the flows, the CLI and the DVC stages share it without
threading settings through every call: ``METAGAN_<SERVICE>_ATTEMPTS`` (default 5),
``METAGAN_<SERVICE>_BACKOFF_S`` (first delay, doubled after each failure, default 1),
``METAGAN_<SERVICE>_MAX_BACKOFF_S`` (default 30) and ``METAGAN_<SERVICE>_TIMEOUT_S`` (connect and
read timeout of one request, default 30).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from metagan.env import number_from_env
from metagan.errors import MetaganError, Unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


RETRIED_SERVICES = ("mlflow", "s3", "dvc", "index")
"""The services whose calls retry under ``METAGAN_<SERVICE>_*`` (:meth:`RetryPolicy.from_env`)."""


class ServiceUnavailable(Unavailable):
    """A remote service stayed unreachable (or kept failing) through every retry."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    timeout_s: float = 30.0

    @classmethod
    def from_env(cls, service: str) -> "RetryPolicy":
        prefix = f"METAGAN_{service.upper()}_"
        return cls(number_from_env(prefix + "ATTEMPTS", cls.attempts, int, minimum=1),
                   number_from_env(prefix + "BACKOFF_S", cls.backoff_s),
                   number_from_env(prefix + "MAX_BACKOFF_S", cls.max_backoff_s),
                   number_from_env(prefix + "TIMEOUT_S", cls.timeout_s))

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure: backoff_s, 2x, 4x, ... up to the cap."""
        return min(self.max_backoff_s, self.backoff_s * 2 ** (failures - 1))


def call_with_retries(action: Callable[[], T], what: str, policy: RetryPolicy,
                      is_transient: Callable[[BaseException], bool], service: str = "service") -> T:
    """Run ``action``; retry transient failures with exponential backoff, at most ``policy.attempts``
    times in all. Other exceptions propagate at once, and so does a failure the library classified
    permanent (:mod:`metagan.errors`: an unknown customer, a damaged file...), whatever
    ``is_transient`` says; the last transient one becomes a :class:`ServiceUnavailable` naming
    ``what``."""
    start = time.monotonic()
    for attempt in range(1, policy.attempts + 1):
        try:
            return action()
        except Exception as e:
            if (isinstance(e, MetaganError) and e.kind.permanent) or not is_transient(e):
                raise
            if attempt == policy.attempts:
                raise ServiceUnavailable(
                    f"{service} unavailable: {what} failed {attempt} time(s) over "
                    f"{time.monotonic() - start:.1f} s; last error: {type(e).__name__}: {e}"
                ) from e
            delay = policy.delay(attempt)
            log.warning("%s failed (attempt %d of %d, retrying in %.1f s): %s", what, attempt,
                        policy.attempts, delay, e)
            time.sleep(delay)
    raise AssertionError("unreachable")


def check_retry_environment() -> None:
    """Every service's ``METAGAN_<SERVICE>_*`` numbers read once: one out of range is bad input
    (exit 3) at the command's start, not each customer's failure at its first call."""
    for service in RETRIED_SERVICES:
        RetryPolicy.from_env(service)
