"""The plan as data: JSON round trip, compact text, and validation that points at the bad op."""

from __future__ import annotations

import dataclasses
import random

import pytest

from halp.errors import PlanError
from halp.methods import plan_for
from halp.model.graph import Region, region
from halp.model.trace import trace_model
from halp.model.zoo import ModelSpec, build_model
from halp.plan import Compute, Plan, Transfer, covers, validate
from halp.scenario import DeepthingsMethod, HalpMethod, ModnnMethod

from support import cluster


@pytest.fixture(scope="module")
def graph():
    spec = ModelSpec("mobilenet_v1", 0.25, 128)
    return trace_model(build_model(spec), spec.shape, spec.variant)


@pytest.mark.parametrize("method", [HalpMethod(name="halp"), ModnnMethod(name="modnn"),
                                    DeepthingsMethod(name="deepthings")], ids=lambda m: m.name)
def test_plan_round_trips_through_json_unchanged(graph, method):
    c, latency = cluster([1.0, 1.5, 0.7])
    plan = plan_for(method, graph, c, latency, graph.name)
    again = Plan.from_json(plan.to_json())
    assert again == plan
    validate(again, graph)


def test_text_form_has_one_line_per_op(graph):
    c, latency = cluster([1.0, 1.0], 1e9, profile="rpi4")
    plan = plan_for(HalpMethod(name="halp"), graph, c, latency, graph.name)
    lines = str(plan).splitlines()
    assert len(lines) == len(plan.ops) + 2
    assert any("transfer d0->d1" in line for line in lines)


def test_missing_rows_are_caught_and_marked(graph):
    c, latency = cluster([1.0, 1.0], 1e9, profile="rpi4")
    plan = plan_for(HalpMethod(name="halp"), graph, c, latency, graph.name)
    # Shrink the first transfer by one row: the compute that reads it is no longer covered.
    i, first = next((i, op) for i, op in enumerate(plan.ops) if isinstance(op, Transfer))
    rows = first.region.rows
    smaller = first.region._replace(rows=rows._replace(stop=rows.stop - 1))
    plan.ops[i] = dataclasses.replace(first, region=smaller, bytes=graph.region_bytes(first.boundary, smaller))
    reader = next(op for op in plan.ops if first.id in op.inputs)
    with pytest.raises(PlanError) as info:
        validate(plan, graph)
    assert f">{reader.id}<" in str(info.value)
    assert "do not cover" in str(info.value)


def test_a_compute_moved_off_its_inputs_device_is_caught(graph):
    c, latency = cluster([1.0, 1.0], 1e9, profile="rpi4")
    plan = plan_for(HalpMethod(name="halp"), graph, c, latency, graph.name)
    i, op = next((i, op) for i, op in enumerate(plan.ops) if isinstance(op, Compute) and op.device == "d1")
    plan.ops[i] = dataclasses.replace(op, device="d0")
    with pytest.raises(PlanError, match="needs boundary .* on d0"):
        validate(plan, graph)


def test_byte_count_must_match_region(graph):
    c, latency = cluster([1.0, 1.0], 1e9, profile="rpi4")
    plan = plan_for(HalpMethod(name="halp"), graph, c, latency, graph.name)
    i, op = next((i, op) for i, op in enumerate(plan.ops) if isinstance(op, Transfer))
    plan.ops[i] = dataclasses.replace(op, bytes=op.bytes + 1)
    with pytest.raises(PlanError, match="bytes"):
        validate(plan, graph)


def covers_cell_by_cell(need: Region, pieces: list[Region]) -> bool:
    cells = {(r, c) for p in pieces for r in range(*p.rows) for c in range(*p.cols)}
    return all((r, c) in cells for r in range(*need.rows) for c in range(*need.cols))


def test_coverage_is_decided_as_cell_by_cell_on_random_pieces():
    rng = random.Random(7)

    def box() -> Region:
        r0, c0 = rng.randrange(-2, 10), rng.randrange(-2, 10)
        return region((r0, r0 + rng.randrange(0, 8)), (c0, c0 + rng.randrange(0, 8)))

    for _ in range(2000):
        need, pieces = box(), [box() for _ in range(rng.randrange(0, 6))]
        assert covers(need, pieces) == covers_cell_by_cell(need, pieces), (need, pieces)


def test_coverage_of_a_huge_map_takes_no_memory_per_cell():
    """A mask per cell would be a petabyte here; on the pieces' edges it is a few cells."""
    side = 10**8
    halves = [region((0, side // 2), (0, side)), region((side // 2, side), (0, side))]
    assert covers(region((0, side), (0, side)), halves)
    assert not covers(region((0, side), (0, side)), halves[:1])
