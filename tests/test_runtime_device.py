"""What every device shares: sends leave before the next compute op, I/O threads go first."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from halp.model.graph import region
from halp.plan import Transfer
from halp.runtime.device import IO_CGROUP_FD_ENV, IO_NICE, Aborted, BlockStore, io_priority

BLOCK = (region((0, 1), (0, 1)), torch.zeros(1, 1, 1, 1))


def transfer(op: str, source: str) -> Transfer:
    return Transfer(op, "h", "w", 0, region((0, 1), (0, 1)), 4, (source,))


def test_a_ready_send_holds_the_next_op_until_it_has_left():
    store = BlockStore()
    store.put(0, "c1", BLOCK)
    sends = [transfer("t1", "c1"), transfer("t2", "c9")]  # c9 does not exist yet
    left: list[float] = []

    def sender() -> None:
        time.sleep(0.2)
        left.append(time.perf_counter())
        store.mark_sent(0, "t1")

    thread = threading.Thread(target=sender)
    thread.start()
    store.wait_sent(0, sends, deadline=time.perf_counter() + 5)
    released = time.perf_counter()
    thread.join()
    assert left and released >= left[0]
    # t2 waits for an input nobody has made: the op goes ahead (its sender is held there).
    started = time.perf_counter()
    store.wait_sent(0, sends, deadline=time.perf_counter() + 5)
    assert time.perf_counter() - started < 0.1


def test_a_failure_wakes_an_op_waiting_for_a_send():
    store = BlockStore()
    store.put(0, "c1", BLOCK)
    threading.Timer(0.1, store.fail, args=("worker w died",)).start()
    with pytest.raises(Aborted, match="worker w died"):
        store.wait_sent(0, [transfer("t1", "c1")], deadline=time.perf_counter() + 5)


def test_io_threads_run_ahead_where_the_process_may_raise_a_priority():
    tid = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, tid)
    with io_priority():
        inside = os.getpriority(os.PRIO_PROCESS, tid)
    assert os.getpriority(os.PRIO_PROCESS, tid) == before
    assert inside == (IO_NICE if os.geteuid() == 0 else before)


def test_an_io_thread_that_cannot_leave_the_quota_says_so_and_goes_on(monkeypatch, capsys):
    read_only = os.open(os.devnull, os.O_RDONLY)  # writing the thread id to it fails
    monkeypatch.setenv(IO_CGROUP_FD_ENV, str(read_only))
    ran = []
    try:
        with io_priority():
            ran.append(threading.get_native_id())
    finally:
        os.close(read_only)
    assert ran  # the I/O work still happens
    assert str(ran[0]) in capsys.readouterr().err
