"""Timing ops on this machine: clean calls, the CPU-quota clock, and the extra measurements."""

from __future__ import annotations

import random

import numpy as np
import pytest
from latency_support import tiny_graph, tiny_samples

from halp.errors import HalpError
from halp.latency.ops import plan_ops
from halp.latency.timing import measure_copy_s_per_byte, measure_message_overhead_s, time_ops
from halp.model.graph import ModelGraph


@pytest.fixture(scope="module")
def graph() -> ModelGraph:
    return tiny_graph()


@pytest.fixture(scope="module")
def samples(graph):
    return tiny_samples(graph)


def test_under_a_quota_an_op_is_timed_by_its_cpu_over_the_share(graph):
    """Outside any quota this thread's CPU time is its wall time, so an op timed "at half a
    core" comes out twice its time at a whole core: the throttled time, ops back to back."""
    ops = [op for op in plan_ops(graph, (1.0,), 2, random.Random(0)) if op.stop - op.start > 1]
    ratios = []
    for _ in range(5):  # alternating: this VM's speed drifts by a third within seconds
        whole = [s.seconds for s in time_ops(ops, repeats=3, statistic="median")]
        half = [s.seconds for s in time_ops(ops, repeats=3, statistic="median", cpu_share=0.5)]
        ratios.append(float(np.median(np.array(half) / np.array(whole))))
    ratio = float(np.median(ratios))
    # 2 in theory; a wall clock would give 1, a share applied the wrong way 0.5.
    assert 1.4 < ratio < 2.6, ratios
    with pytest.raises(HalpError, match="threads"):
        time_ops(ops, repeats=1, threads=2, cpu_share=0.5)


def test_samples_are_positive_and_cover_single_layers_and_fused_runs(samples):
    assert all(s.seconds > 0 for s in samples)
    assert all(0 <= s.clean <= s.calls for s in samples)
    assert any(s.fused for s in samples) and any(not s.fused for s in samples)


def test_message_overhead_and_copy_cost_are_plausible():
    message = measure_message_overhead_s(round_trips=50)
    copy = measure_copy_s_per_byte(repeats=3)

    assert 1e-7 < message < 5e-3  # between 0.1 us and 5 ms for a 64-byte loopback message
    assert 1e-13 < copy < 1e-8  # between 100 MB/s and 10 TB/s
