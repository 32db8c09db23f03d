"""Which ops a profile is measured on: single layers and fused runs, on row slices."""

from __future__ import annotations

import random

import pytest
from latency_support import tiny_graph

from halp.latency.ops import graph_of, plan_ops
from halp.model.graph import RESHAPE, ModelGraph
from halp.model.zoo import ModelSpec


@pytest.fixture(scope="module")
def graph() -> ModelGraph:
    return tiny_graph()


def test_plan_times_every_layer_and_fused_runs_on_row_slices(graph):
    ops = plan_ops(graph, (1.0, 1 / 2, 1 / 4), 2, random.Random(0))

    singles = {op.start for op in ops if op.stop == op.start + 1}
    assert singles == {layer.index for layer in graph.layers if layer.kind != RESHAPE}
    fused = [op for op in ops if op.stop - op.start > 1]
    assert any(op.stop <= graph.spatial_end for op in fused)
    assert any(op.stop == len(graph) for op in fused)  # the classifier
    for op in ops:
        assert not op.out.empty
        assert graph.full(op.stop).contains(op.out)


def test_graph_of_a_zoo_spec_is_named_by_its_variant():
    assert graph_of(ModelSpec("mobilenet_v1", 0.25, 128)).name == "0.25_128"
