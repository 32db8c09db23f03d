"""The latency model's fast path for row slices equals the per-layer sum it stands for."""

from __future__ import annotations

import random

import pytest

from halp.model.trace import trace_model
from halp.model.zoo import ModelSpec, build_model

from support import cluster


@pytest.mark.parametrize("spec", [ModelSpec("vgg16"), ModelSpec("mobilenet_v1", 0.5, 160)],
                         ids=lambda s: s.variant)
def test_row_fast_path_equals_layer_sum(spec):
    graph = trace_model(build_model(spec), spec.shape, spec.variant)
    c, latency = cluster([1.0, 2.0])
    profile = c.device("d1").profile
    rng = random.Random(0)
    cuts = graph.cut_points() + [len(graph)]
    for _ in range(200):
        a, b = sorted(rng.sample(cuts, 2))
        height = graph.height(b)
        r0 = rng.randrange(height)
        r1 = rng.randrange(r0 + 1, height + 1)
        out = graph.rows(b, r0, r1)
        slow = profile.op_overhead_s + sum(profile.layer_s(layer, held, produced)
                                           for layer, held, produced in graph.layer_regions(a, b, out))
        assert latency.compute_s("d1", graph, a, b, out) == pytest.approx(slow / 2.0, rel=1e-9)


def test_transfer_time_is_overhead_plus_bits_over_rate():
    c, latency = cluster([1.0, 1.0], 8e6)
    assert latency.transfer_s("d0", "d1", 1_000_000) == pytest.approx(latency.message_s() + 1.0)
