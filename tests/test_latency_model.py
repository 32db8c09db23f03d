"""The latency model's fast path for row slices equals the per-layer sum it stands for."""

from __future__ import annotations

import dataclasses
import functools
import random

import pytest

from halp.cluster import Cluster, Device
from halp.latency.model import LatencyModel
from halp.latency.profile import load_profile
from halp.model.graph import ModelGraph
from halp.model.trace import trace_model
from halp.model.zoo import ModelSpec, build_model

from support import cluster

SPECS = [ModelSpec("vgg16"), ModelSpec("mobilenet_v1", 0.5, 160), ModelSpec("resnet18"),
         ModelSpec("mobilenet_v2"), ModelSpec("googlenet")]
DAG_SPECS = SPECS[2:]


@functools.cache
def graph_of(spec: ModelSpec) -> ModelGraph:
    return trace_model(build_model(spec), spec.shape, spec.variant)


def slow_s(profile, graph, start, stop, out) -> float:
    """What the fast path stands for: the profile's prediction of every op on the regions
    `layer_regions` gives (blocks opened), plus one op overhead."""
    return profile.op_overhead_s + sum(profile.layer_s(layer, held, produced)
                                       for layer, held, produced in graph.layer_regions(start, stop, out))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.variant)
def test_row_fast_path_equals_layer_sum(spec):
    graph = graph_of(spec)
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
        assert latency.compute_s("d1", graph, a, b, out) == pytest.approx(
            slow_s(profile, graph, a, b, out) / 2.0, rel=1e-9)


def merge_profile():
    """The shipped profile (no merge kind: merges fall back to elementwise) and the same with
    merge coefficients of its own."""
    old = load_profile("this-machine")
    assert "merge" not in old.coefficients
    new = dataclasses.replace(old, name="with-merge", coefficients={
        **old.coefficients,
        "merge": {"intercept_s": 3e-6, "s_per_flop": 1e-11, "s_per_in_byte": 2e-11, "s_per_out_byte": 5e-11}})
    return old, new


@pytest.mark.parametrize("spec", DAG_SPECS, ids=lambda s: s.variant)
def test_every_stage_on_full_width_row_slices_equals_its_ops_sum(spec):
    """Each stage alone (a block's ops cropped to what their consumers read: a residual
    block's 1x1 stride-2 shortcut reads one column less than the map has), on slices at the
    top, the bottom, inside and whole, with a profile that has merge coefficients and one
    that has not."""
    graph = graph_of(spec)
    blocks = [layer for layer in graph.layers if layer.nodes]
    assert blocks and all(any(n.spec.kind == "merge" for n in b.nodes) for b in blocks)
    rng = random.Random(1)
    for profile in merge_profile():
        latency = LatencyModel(Cluster((Device("d", profile),), host="d"))
        for layer in graph.layers:
            start, stop = layer.index, layer.index + 1
            height = graph.height(stop)
            slices = {(0, height), (0, 1), (height - 1, height)}
            if layer.spatial:
                for _ in range(3):
                    r0 = rng.randrange(height)
                    slices.add((r0, rng.randrange(r0 + 1, height + 1)))
            for r0, r1 in sorted(slices):
                out = graph.rows(stop, r0, r1)
                assert latency.compute_s("d", graph, start, stop, out) == pytest.approx(
                    slow_s(profile, graph, start, stop, out), rel=1e-9), (layer.where, layer.kind, r0, r1)


def test_an_old_profile_predicts_a_block_with_its_merge_as_elementwise():
    graph = graph_of(ModelSpec("resnet18"))
    block = next(layer for layer in graph.layers if layer.nodes)
    old, new = merge_profile()
    merge = next(n.spec for n in block.nodes if n.spec.kind == "merge")
    full = graph.full(block.index + 1)
    elementwise = dataclasses.replace(merge, kind="elementwise")
    assert old.layer_s(merge, full, full) == old.layer_s(elementwise, full, full) > 0
    assert new.layer_s(merge, full, full) != old.layer_s(merge, full, full)
    for profile in (old, new):
        latency = LatencyModel(Cluster((Device("d", profile),), host="d"))
        out = graph.rows(block.index + 1, 3, 9)
        predicted = latency.compute_s("d", graph, block.index, block.index + 1, out)
        assert predicted == pytest.approx(slow_s(profile, graph, block.index, block.index + 1, out), rel=1e-9)
        assert predicted > profile.op_overhead_s


def test_transfer_time_is_message_cost_plus_frames_over_rate():
    c, _ = cluster([1.0, 1.0], 8e6)
    host = c.device("d0").profile
    signed = dataclasses.replace(host, message_overhead_s=0.0005, message_s_per_byte=2e-9)
    latency = LatencyModel(dataclasses.replace(
        c, devices=tuple(dataclasses.replace(d, profile=signed) for d in c.devices)))
    # 1 MB of payload is 1 MB x 1514/1448 of frames on the wire: 1.0456 s at 8 Mbps; signing
    # and checking it 2 ms, on top of the 0.5 ms per block.
    frames_s = 1_000_000 * 1514 / 1448 * 8 / 8e6
    assert latency.message_s(1_000_000) == pytest.approx(0.0005 + 0.002)
    assert latency.transfer_s("d0", "d1", 1_000_000) == pytest.approx(0.0025 + frames_s)
