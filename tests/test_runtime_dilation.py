"""A dilated device (halp.runtime.dilation): each compute op runs on the device's core and
takes its CPU time x the slowdown, from ops of a millisecond to a second."""

from __future__ import annotations

import os
import statistics
import time

import pytest
import torch
from torch import nn

from halp.cluster import Cluster, Device
from halp.errors import BackendError
from halp.latency.profile import load_profile
from halp.latency.timing import steady_allocator
from halp.methods import standalone
from halp.model.trace import trace_model
from halp.runtime.device import BlockStore, run_compute_ops
from halp.runtime.dilation import DILATION_ENV, Dilation, parse

SLOWDOWN = 4.0


def one_conv(side: int):
    """A plan of one compute op: a 3x3 convolution on a side x side map."""
    graph = trace_model(nn.Sequential(nn.Conv2d(32, 32, 3, padding=1)), (32, side, side), "conv")
    cluster = Cluster((Device("h", load_profile("this-machine")),), host="h")
    return standalone.plan(graph, cluster, "conv"), graph


@pytest.mark.parametrize("side", [32, 48, 160, 512, 900])  # ~0.3 ms to ~250 ms of CPU here:
# 1.2 ms to 1 s dilated
def test_a_dilated_op_takes_its_cpu_time_times_the_slowdown(side, monkeypatch):
    core = sorted(os.sched_getaffinity(0))[-1]
    monkeypatch.setenv(DILATION_ENV, Dilation(SLOWDOWN, core).to_env())
    held: list[float] = []  # the CPU time each op reported to its hold
    real_hold = Dilation.hold

    def hold(self, started, cpu_s):
        held.append(cpu_s)
        real_hold(self, started, cpu_s)

    monkeypatch.setattr(Dilation, "hold", hold)
    steady_allocator()  # as in the runtime: freed memory stays, calls do not fault pages in
    plan, graph = one_conv(side)
    x = torch.randn(1, *graph.input_shape)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    ratios = []
    try:
        for request in range(8):  # the first one warms up, as the runtime's warm-up does
            store = BlockStore()
            store.put(request, plan.input_id, (graph.full(0), x))
            c0 = time.thread_time()
            (_, start, end), = run_compute_ops(plan, graph, "h", request, store)
            used = time.thread_time() - c0
            assert held[-1] <= used  # what it held for is the op's own CPU time
            if request:
                ratios.append((end - start) / (held[-1] * SLOWDOWN))
    finally:
        torch.set_num_threads(before)
    assert os.sched_getaffinity(0) == {core}  # the compute thread (this one) kept to its core
    assert os.sched_getscheduler(0) == os.SCHED_IDLE  # and yields it to any other thread
    # Never released early; late by a busy VM's wake-up at most now and then (one op of 2.4 ms
    # in CI came out 0.6 ms late among others within 4%), so the typical op is what is held
    # to 10%.
    assert min(ratios) > 0.9, (held, ratios)
    assert abs(statistics.median(ratios) - 1) < 0.10, (held, ratios)


@pytest.fixture(autouse=True)
def _restore_affinity():
    cores, policy = os.sched_getaffinity(0), os.sched_getscheduler(0)
    yield
    os.sched_setaffinity(0, cores)
    os.sched_setscheduler(0, policy, os.sched_param(0))


def test_a_bad_dilation_is_one_line():
    for text in ("4", "x@1", "0.5@0", "4@-1"):
        with pytest.raises(BackendError, match=DILATION_ENV):
            parse(text)
    assert parse("4.5@1") == Dilation(4.5, 1)


COLD_S, WARM_S = 0.02, 0.01  # an op's CPU time run first, and run again at once


# A cold run of 20 ms, then warm ones of 10: a second from 2x; a third where 30 + 10 ms end
# before the hold would (from 4x; 3x has no room for it).
@pytest.mark.parametrize(("slowdown", "runs"), [(1.5, 1), (2.0, 2), (3.0, 2), (5.0, 3)])
def test_an_op_runs_again_for_its_warm_cpu_time_where_the_hold_has_room(slowdown, runs):
    core = sorted(os.sched_getaffinity(0))[-1]
    calls: list[int] = []
    held: list[float] = []
    ran_until: list[float] = []

    def op() -> int:
        calls.append(len(calls))
        # cold, then warm; long enough that a late wake-up on a busy VM (2 ms seen in CI)
        # stays within the 10% asked of the hold
        end = time.thread_time() + (COLD_S if len(calls) == 1 else WARM_S)
        while time.thread_time() < end:
            pass
        ran_until.append(time.perf_counter())
        return len(calls)

    dilation = Dilation(slowdown, core)
    real_hold = dilation.hold
    object.__setattr__(dilation, "hold", lambda started, cpu_s: (held.append(cpu_s),
                                                                   real_hold(started, cpu_s)))
    started = time.perf_counter()

    result = dilation.run(op, started)

    assert result == 1 and len(calls) == runs  # the block is the first run's
    assert held[0] == pytest.approx(COLD_S if runs == 1 else WARM_S, rel=0.25)
    spent = ran_until[-1] - started  # a second run that overran the target ends late
    assert time.perf_counter() - started == pytest.approx(max(slowdown * held[0], spent), rel=0.1)
