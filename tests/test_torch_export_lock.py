"""The lock that keeps other threads' torch work out of an ONNX export's way."""

import threading
import time

import pytest

from metagan.torch_export_lock import SharedExclusiveLock


def inside(lock_context, entered: threading.Event, leave: threading.Event) -> threading.Thread:
    def hold():
        with lock_context():
            entered.set()
            leave.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    return thread


def test_many_threads_share_it_and_one_holding_it_alone_waits_for_them_all():
    lock = SharedExclusiveLock()
    first, second, alone = threading.Event(), threading.Event(), threading.Event()
    leave_first, leave_second, leave_alone = threading.Event(), threading.Event(), threading.Event()
    a = inside(lock.shared, first, leave_first)
    b = inside(lock.shared, second, leave_second)
    assert first.wait(5) and second.wait(5)  # both inside at once
    c = inside(lock.exclusive, alone, leave_alone)
    leave_first.set()
    assert not alone.wait(0.2)  # one sharer still inside
    leave_second.set()
    assert alone.wait(5)
    leave_alone.set()
    for t in (a, b, c):
        t.join(5)


def test_a_thread_waiting_to_hold_it_alone_goes_before_new_sharers():
    """Else a stream of customers' torch work would keep an export waiting for ever."""
    lock = SharedExclusiveLock()
    shared, alone, later = threading.Event(), threading.Event(), threading.Event()
    leave_shared, leave_alone, leave_later = threading.Event(), threading.Event(), threading.Event()
    a = inside(lock.shared, shared, leave_shared)
    assert shared.wait(5)
    b = inside(lock.exclusive, alone, leave_alone)
    time.sleep(0.1)  # the exporter is waiting now
    c = inside(lock.shared, later, leave_later)
    assert not later.wait(0.2)
    leave_shared.set()
    assert alone.wait(5) and not later.is_set()
    leave_alone.set()
    assert later.wait(5)
    leave_later.set()
    for t in (a, b, c):
        t.join(5)


def test_it_is_reentrant_and_a_sharer_inside_never_waits_behind_an_exporter():
    lock = SharedExclusiveLock()
    with lock.exclusive():
        with lock.exclusive(), lock.shared(), lock.shared():  # an export's own checks
            pass
    entered, alone, leave = threading.Event(), threading.Event(), threading.Event()
    with lock.shared():
        exporter = inside(lock.exclusive, alone, leave)
        time.sleep(0.1)
        with lock.shared():  # would deadlock if it queued behind the exporter
            entered.set()
        assert not alone.is_set()
        with pytest.raises(RuntimeError, match="cannot take it alone"):
            with lock.exclusive():
                pass
    assert entered.is_set() and alone.wait(5)
    leave.set()
    exporter.join(5)
