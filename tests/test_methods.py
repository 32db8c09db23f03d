"""Every planner computes exactly what the whole model computes, on real tensors."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from halp.execute import execute, max_error
from halp.methods import halp as halp_method
from halp.methods import plan_for
from halp.model.trace import trace_model
from halp.model.zoo import ModelSpec, build_model
from halp.plan import Compute, Transfer, validate
from halp.scenario import DeepthingsMethod, HalpMethod, ModnnMethod, OffloadMethod, StandaloneMethod
from halp.schedule import estimate

from support import cluster
from test_model_graph import layer_strategy, sliceable_model

METHODS = [StandaloneMethod(name="standalone"), HalpMethod(name="halp"), HalpMethod(name="equal"),
           ModnnMethod(name="modnn"), DeepthingsMethod(name="deepthings"), OffloadMethod(name="offload")]
SPEEDS = {2: [1.0, 0.6], 3: [1.0, 1.7, 0.5], 4: [0.8, 1.0, 2.0, 0.4]}
_MODELS: dict[str, tuple] = {}


def model(name: str):
    if name not in _MODELS:
        spec = ModelSpec("vgg16") if name == "vgg16" else ModelSpec("mobilenet_v1", 0.5, 160)
        m = build_model(spec)
        _MODELS[name] = (m, trace_model(m, spec.shape, spec.variant))
    return _MODELS[name]


@pytest.mark.parametrize("devices", [2, 3, 4])
@pytest.mark.parametrize("family", ["vgg16", "mobilenet_v1"])
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_every_method_plans_the_whole_models_output_exactly(method, family, devices):
    m, graph = model(family)
    c, latency = cluster(SPEEDS[devices], [100e6, 40e6, 300e6][: devices - 1])
    plan = plan_for(method, graph, c, latency, graph.name)
    error, scale = max_error(plan, graph, m)
    assert error <= 1e-4 * scale


def test_halp_uses_the_secondaries_and_beats_standalone():
    m, graph = model("vgg16")
    c, latency = cluster([1.0, 1.0, 1.0])
    halp = plan_for(HalpMethod(name="halp"), graph, c, latency, "vgg16")
    alone = plan_for(StandaloneMethod(name="standalone"), graph, c, latency, "vgg16")
    busy = {op.device for op in halp.ops if isinstance(op, Compute)}
    assert busy == {"d0", "d1", "d2"}
    assert estimate(halp, graph, latency).makespan < estimate(alone, graph, latency).makespan


def test_halp_shares_the_classifier_where_it_pays():
    m, graph = model("vgg16")
    end = graph.spatial_end

    def classifier_devices(plan):
        return {op.device for op in plan.ops if isinstance(op, Compute) and op.stop > end}

    c, latency = cluster([1.0, 1.0, 1.0])
    shared = plan_for(HalpMethod(name="halp"), graph, c, latency, "vgg16")
    kept = plan_for(HalpMethod(name="halp", split_classifier=False), graph, c, latency, "vgg16")
    assert classifier_devices(shared) == {"d0", "d1", "d2"} and classifier_devices(kept) == {"d0"}
    assert estimate(shared, graph, latency).makespan < estimate(kept, graph, latency).makespan
    error, scale = max_error(shared, graph, m)
    assert error <= 1e-4 * scale
    # Over a link too slow to carry the flat map in time, the host keeps the classifier.
    c, latency = cluster([1.0, 1.0, 1.0], 1e5)
    assert classifier_devices(plan_for(HalpMethod(name="halp"), graph, c, latency, "vgg16")) == {"d0"}


def test_halp_secondaries_receive_no_halo():
    """Blocks sent to secondaries do not overlap: overlapping zones are the host's."""
    _, graph = model("vgg16")
    c, latency = cluster([1.0, 1.0, 1.0])
    plan = plan_for(HalpMethod(name="halp"), graph, c, latency, "vgg16")
    for a, _ in plan.segments:
        sent = sorted(op.region.rows for op in plan.ops
                      if isinstance(op, Transfer) and op.src == "d0" and op.boundary == a)
        for first, second in zip(sent, sent[1:], strict=False):
            assert first.stop <= second.start


def test_halp_is_not_worse_than_equal_on_unequal_devices():
    _, graph = model("mobilenet_v1")
    c, latency = cluster([1.0, 3.0, 0.3])
    halp = plan_for(HalpMethod(name="halp"), graph, c, latency, graph.name)
    equal = plan_for(HalpMethod(name="equal"), graph, c, latency, graph.name)
    assert estimate(halp, graph, latency).makespan <= estimate(equal, graph, latency).makespan * 1.001


@pytest.mark.parametrize("bandwidth", [2e6, 100e6])
def test_equal_gives_every_device_rows_of_every_segment_even_where_halp_keeps_them(bandwidth):
    # Over 2 Mbps HALP keeps all on the host (a deep segment whose halo swallows any share);
    # equal still splits, on segments where an equal share of the input computes some rows.
    _, graph = model("mobilenet_v1")
    c, latency = cluster([1.0, 1.0, 1.0], bandwidth)

    halp = plan_for(HalpMethod(name="halp"), graph, c, latency, graph.name)
    equal = plan_for(HalpMethod(name="equal"), graph, c, latency, graph.name)

    if bandwidth < 10e6:
        assert {op.device for op in halp.ops if isinstance(op, Compute)} == {"d0"}
    cuts = graph.cut_points()
    busy: dict[tuple[int, int], set[str]] = {}  # per segment, the devices computing in it
    for op in equal.ops:
        if isinstance(op, Compute) and op.stop <= graph.spatial_end:
            busy.setdefault((op.start, op.stop), set()).add(op.device)
    assert max(stop for _, stop in busy) == graph.spatial_end
    for (start, stop), devices in busy.items():
        if cuts[cuts.index(start) + 1] != stop:  # it could have been cut shorter
            assert devices == {"d0", "d1", "d2"}, (start, stop)
    # Most of the network is split three ways: all devices share the first segments' work.
    shared = [stop - start for (start, stop), devices in busy.items() if len(devices) == 3]
    assert sum(shared) >= graph.spatial_end / 2


@pytest.mark.parametrize(("speeds", "network"), [([1.0, 1.0, 1.0], "star"), ([1.0, 2.0, 0.5], "star"),
                                                 ([1.0, 2.0, 0.5], "shared")])
def test_halp_split_matches_the_best_of_every_split(speeds, network):
    """On segments small enough to try every pair of blocks, in both send orders, the descent
    finds a split as fast as the best one (a minimax the old single-edge moves missed)."""
    from itertools import combinations_with_replacement, permutations

    from halp.methods.segment import layout, segment_time

    _, graph = model("vgg16")
    c, latency = cluster(speeds, [100e6, 40e6], network)
    for start, stop in [(17, 24), (24, 31), (28, 31), (10, 17)]:
        height = graph.height(start)
        best = min(
            segment_time(graph, c, latency, layout(graph, start, stop, order, ((s1, e1), (s2, e2))),
                         start, stop)
            for order in permutations(c.secondaries)
            for s1, e1, s2, e2 in combinations_with_replacement(range(0, height + 1, 2 if height > 28 else 1), 4))
        found = halp_method.optimise_split(graph, c, latency, start, stop)
        assert found.time_s <= best * 1.005, (start, stop)


def test_offload_picks_standalone_when_the_link_is_slow():
    _, graph = model("mobilenet_v1")
    c, latency = cluster([1.0, 1.0], 1e3)
    plan = plan_for(OffloadMethod(name="offload"), graph, c, latency, graph.name)
    assert not any(isinstance(op, Transfer) for op in plan.ops)


def test_fixed_cuts_become_the_plans_segments():
    _, graph = model("vgg16")
    c, latency = cluster([1.0, 1.0])
    plan = plan_for(HalpMethod(name="halp", cuts=[10, 20]), graph, c, latency, "vgg16")
    assert plan.segments == [(0, 10), (10, 20), (20, graph.spatial_end)]


@settings(max_examples=25, deadline=None)
@given(st.lists(layer_strategy, min_size=2, max_size=6), st.integers(16, 48), st.integers(2, 4),
       st.integers(0, 10_000))
def test_random_chains_and_random_shares_are_exact(layers, size, devices, seed):
    net, graph = sliceable_model(layers, size)
    rng = random.Random(seed)
    c, latency = cluster([rng.uniform(0.3, 3.0) for _ in range(devices)])
    cuts = graph.cut_points()
    chosen = sorted({0, graph.spatial_end, *rng.sample(cuts, k=min(2, len(cuts)))})
    splits = []
    for a, b in zip(chosen, chosen[1:], strict=False):
        if a == b:
            continue
        height = graph.height(a)
        points = sorted(rng.randint(0, height) for _ in range(devices - 1))
        edges = [*points, height]
        order = tuple(rng.sample(c.secondaries, k=len(c.secondaries)))
        blocks = tuple((edges[i], edges[i + 1]) for i in range(len(points)))
        splits.append(halp_method.Split(a, b, order, blocks, 0.0))
    plan = halp_method.plan_segments(graph, c, latency, "random", "halp", splits)
    validate(plan, graph)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(execute(plan, graph, x), net(x), rtol=1e-5, atol=1e-5)
    grid = (rng.randint(1, 4), rng.randint(1, 4))
    for method in (HalpMethod(name="halp"), ModnnMethod(name="modnn"),
                   DeepthingsMethod(name="deepthings", grid=grid)):
        other = plan_for(method, graph, c, latency, "random")
        with torch.no_grad():
            torch.testing.assert_close(execute(other, graph, x), net(x), rtol=1e-5, atol=1e-5)
