"""The per-customer lock each profile uses for the registry's read-modify-write steps.

- embedded (one machine): ``flock`` files beside the registry (:func:`metagan.locks.file_locker`);
  the kernel frees a lock when its holder dies, SIGKILL included.
- scale-out (workers on many machines, MLflow reached over HTTP only): a Prefect global
  concurrency limit of 1 per customer on the Prefect server all of them already use. The slot is
  held on a lease the client renews while it works; the server's repossessor frees the slot of a
  holder that died once its lease (``LEASE_S``) runs out.

Why not Prefect's limits in the embedded profile too: each ``metagan`` process there starts its own
ephemeral API server, which runs no repossessor; a process SIGKILLed while holding a slot left it
held for good (measured: the next run waited out its timeout), where a ``flock`` is freed at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from metagan import registry
from metagan.config import Params
from metagan.locks import Locker, lock_timeout_s

LEASE_S = 60  # Prefect's shortest lease; renewed every 45 s while held

_created: set[str] = set()


def customer_locker(params: Params) -> Locker:
    return prefect_lock if params.profile == "scaleout" else registry.default_locker()


@contextmanager
def prefect_lock(name: str) -> Iterator[None]:
    """Hold the Prefect global concurrency limit ``name`` (limit 1, created on first use)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists

    if name not in _created:
        with get_client(sync_client=True) as client:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:
                pass
        _created.add(name)
    with concurrency(name, occupy=1, strict=True, timeout_seconds=lock_timeout_s(), lease_duration=LEASE_S):
        yield
