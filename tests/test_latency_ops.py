"""Which ops a profile is measured on: single layers, the ops of blocks, and fused runs, on row
slices."""

from __future__ import annotations

import random

import pytest
from latency_support import tiny_dag_graph, tiny_graph

from halp.latency.ops import graph_of, heaviest, plan_ops
from halp.model.graph import MERGE, RESHAPE, ModelGraph, region
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


@pytest.fixture(scope="module")
def dag() -> ModelGraph:
    return tiny_dag_graph()


def test_a_block_is_timed_whole_and_each_of_its_ops_alone(dag):
    ops = plan_ops(dag, (1.0, 1 / 2, 1 / 4), 2, random.Random(0))
    blocks = [layer for layer in dag.layers if layer.nodes]
    assert len(blocks) == 2 and {b.index for b in blocks} <= set(dag.cut_points())
    for block in blocks:
        stage = (block.index, block.index + 1)
        assert any(op.node is None and (op.start, op.stop) == stage for op in ops)
        alone = [op for op in ops if op.node is not None and op.start == block.index]
        assert {op.node for op in alone} == {i for i, n in enumerate(block.nodes) if n.spec.kind != RESHAPE}
        for op in alone:
            node = block.nodes[op.node]
            assert op.stop == op.start + 1 and op.primitives() == [node.spec]
            assert op.height == node.spec.out_height
            assert region((0, node.spec.out_height), (0, node.spec.out_width)).contains(op.out)
            # Its inputs as the block runs it: the block's input or an earlier op's output.
            shapes = [shape for shape, _ in op.inputs()]
            assert shapes == [block.in_shape if i < 0 else block.nodes[i].spec.out_shape for i in node.inputs]
    merges = {op.op.op for op in ops if op.op is not None and op.op.kind == MERGE}
    assert merges == {"add", "cat"}
    # Fused runs cross blocks, and a run's kinds are its ops', blocks opened.
    across = [op for op in ops if op.node is None and op.stop - op.start > 1
              and any(layer.nodes for layer in dag.layers[op.start:op.stop])]
    assert across and all(MERGE in op.kinds() for op in across)


def test_a_runs_kind_is_its_heaviest_and_merges_outweigh_elementwise_ops():
    assert heaviest(("elementwise", "merge")) == "merge"
    assert heaviest(("merge", "elementwise", "conv")) == "conv"
    assert heaviest(("pool", "merge")) == "pool"
    assert heaviest(()) == RESHAPE
