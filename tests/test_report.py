"""Reports from hand-made traces: statistics, speedup, deadlines, utilisation, pictures."""

from __future__ import annotations

import pytest
from sim_cases import tiny_graph

from halp.methods.common import PlanBuilder
from halp.report import (
    bars_png,
    latency_stats,
    segment_of,
    summarise,
    timeline_png,
    utilisation,
)
from halp.trace import OpRecord, RequestRecord, Trace

PNG = b"\x89PNG"


def hand_trace() -> Trace:
    """Two requests: latencies 1 s and 3 s; device a busy [0,1) and [2,3), link a->b [1,2)."""
    ops = [
        OpRecord(0, "c1", "compute", "a", "a", 0.0, 1.0),
        OpRecord(0, "t2", "transfer", "a->b", "a", 1.0, 2.0, bytes=100),
        OpRecord(1, "c1", "compute", "a", "a", 2.0, 3.0),
        OpRecord(1, "c3", "compute", "b", "b", 2.5, 4.0),
        OpRecord(1, "g4", "gather", "b", "b", 3.0, 3.5),  # overlaps c3: counted once
    ]
    requests = [RequestRecord(0, 0.0, 1.0, "m", "x", deadline=2.0),
                RequestRecord(1, 1.0, 4.0, "m", "x", deadline=2.0)]
    return Trace("sim", "m", ops, requests)


def test_latency_statistics_are_mean_median_p95_and_max():
    stats = latency_stats([1.0, 2.0, 3.0, 4.0])
    assert stats == {"mean": 2.5, "p50": 2.5, "p95": pytest.approx(3.85), "max": 4.0}
    assert latency_stats([])["mean"] is None


def test_summary_has_speedup_deadlines_and_utilisation():
    report = summarise(hand_trace(), standalone_s=4.0)
    assert report["requests"] == 2
    assert report["latency_s"]["mean"] == 2.0
    assert report["speedup"] == 2.0  # stand-alone 4 s over mean 2 s
    assert report["deadline_hit_rate"] == 0.5  # 1 s met a 2 s deadline, 3 s did not
    assert report["span_s"] == 4.0
    assert report["bytes_sent"] == 100
    assert report["utilisation"] == {"a": 0.5, "a->b": 0.25, "b": 0.375}


def test_no_deadline_no_hit_rate_and_no_standalone_no_speedup():
    trace = hand_trace()
    for r in trace.requests:
        r.deadline = None
    report = summarise(trace)
    assert report["deadline_hit_rate"] is None and report["speedup"] is None


def test_an_empty_trace_has_no_utilisation():
    assert utilisation(Trace("sim", "m")) == {}


def segmented_plan():
    graph = tiny_graph()
    b = PlanBuilder(graph, "hand", "tiny", "h", ["h", "s"])
    source = b.input()
    t = b.transfer("h", "s", 0, graph.full(0), [source])
    c = b.compute("s", 0, 2, graph.full(2), [t])
    back = b.transfer("s", "h", 2, graph.full(2), [c])
    c2 = b.compute("h", 2, 4, graph.full(4), [back])
    b.segments += [(0, 2), (2, 4)]
    return b.build(b.compute("h", 4, 7, graph.full(7), [c2]))


def test_segment_of_maps_segment_ops_and_leaves_out_the_tail():
    plan = segmented_plan()
    # t3 returns segment 0's output; the tail (c5) lies in no segment
    assert segment_of(plan) == {"t1": 0, "c2": 0, "t3": 0, "c4": 1}


def test_timeline_and_bars_are_written_as_png(tmp_path):
    trace = hand_trace()
    assert timeline_png(trace, tmp_path / "t.png").read_bytes()[:4] == PNG
    rows = [summarise(trace, 4.0) | {"method": "halp", "single_request_s": 1.0},
            summarise(trace, 4.0) | {"method": "modnn", "single_request_s": 100.0}]
    assert bars_png(rows, tmp_path / "b.png", "title").read_bytes()[:4] == PNG


def test_timeline_of_a_simulated_request_with_its_plan_is_written_as_png(tmp_path):
    from sim_cases import cluster

    from sim.backend import simulate_trace

    plan = segmented_plan()
    trace = simulate_trace(cluster(tmp_path, {"h": 1.0, "s": 1.0}, 1e6), tiny_graph(), plan, [0.0])
    path = timeline_png(trace, tmp_path / "one.png", plan=plan, title="one request")
    assert path.read_bytes()[:4] == PNG
