"""Keeping torch work in other threads out of an ONNX export's way.

torch.export keeps global tracing state. While one thread exports, ``torch.compiler.is_exporting()``
is true for *every* thread: a dynamo-disabled call anywhere (torch.manual_seed, an optimizer's step
and zero_grad) then edits a global annotation dict without a lock (KeyError 'custom', seen adapting
40 customers on the thread pool), and a plain forward pass in another thread runs into the
export's fake-tensor mode. Both sides fail: the other thread ("fake_mode.in_kernel_invocation must
be False") and the export ("Unexpected key _export_root@1"). Measured with ``bench/export_race.py``:
3 to 11 of 20 exports failed while one other thread ran forward passes. Met where one process
runs customers on several threads: the embedded profile's thread pool, a Dask worker of several.

So an export that traces holds :data:`TORCH_EXPORT` alone, and every other piece of a customer's
torch work (fine-tuning, the parity check, the metrics, the domain check, an export that reuses a
kept graph) holds it shared: those still run beside each other, never beside a trace. Python has
no readers-writer lock; this one is a condition variable.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class SharedExclusiveLock:
    """Held by many threads at once (:meth:`shared`) or by one alone (:meth:`exclusive`). A thread
    waiting for it alone goes first: new shared holders wait behind it, so an export is never
    starved by a stream of customers. Both are re-entrant in the holding thread, and the thread
    holding it alone may also take it shared (an export's own checks)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._sharers = 0
        self._owner: int | None = None
        self._owner_depth = 0
        self._owners_waiting = 0
        self._mine = threading.local()  # this thread's shared depth

    @contextmanager
    def shared(self) -> Iterator[None]:
        me = threading.get_ident()
        depth = getattr(self._mine, "depth", 0)
        # a thread already inside (shared, or holding it alone) goes on: waiting behind a thread
        # that wants it alone would deadlock
        counted = depth == 0 and self._owner != me
        if counted:
            with self._changed:
                while self._owner is not None or self._owners_waiting:
                    self._changed.wait()
                self._sharers += 1
        self._mine.depth = depth + 1
        try:
            yield
        finally:
            self._mine.depth = depth
            if counted:
                with self._changed:
                    self._sharers -= 1
                    if not self._sharers:
                        self._changed.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        me = threading.get_ident()
        if getattr(self._mine, "depth", 0) and self._owner != me:
            # it would wait for itself: a thread's own torch work must end before it exports
            raise RuntimeError("a thread holding the torch export lock shared cannot take it alone")
        with self._changed:
            if self._owner != me:
                self._owners_waiting += 1
                try:
                    while self._owner is not None or self._sharers:
                        self._changed.wait()
                finally:
                    self._owners_waiting -= 1
                    if self._owner is not None or self._sharers:  # gave up waiting (interrupted):
                        self._changed.notify_all()  # the sharers queued behind it go on
                self._owner = me
            self._owner_depth += 1
        try:
            yield
        finally:
            with self._changed:
                self._owner_depth -= 1
                if not self._owner_depth:
                    self._owner = None
                    self._changed.notify_all()


TORCH_EXPORT = SharedExclusiveLock()
"""Held alone by an ONNX export, shared by any other torch work that may run beside one."""
