"""Hand-computed timelines: tiny plans on two or three devices, every start and end exact.

Times come from the round numbers of `sim_cases.PROFILE`: a conv-relu-conv-relu op costs
1 + 10 + 10 = 21 ms at speed 1, the tail (pool, flatten, linear) 1 + 2 + 3 = 6 ms; a gather of
the 512-byte map 0.512 ms; a message of n bytes 0.5 ms + 1 us x n (signing and checking it) +
its bits on the wire / bandwidth + delay, where it puts `wire_bits(n)` bits on the wire (n x 8
and the frames' headers).
"""

from __future__ import annotations

import pytest
from sim_cases import cluster, tiny_graph

from halp.methods.common import PlanBuilder
from halp.network import BandwidthTrace, wire_bits
from halp.plan import Plan, validate
from sim.backend import simulate_trace

EXACT = 1e-9


def message_s(nbytes: int, bps: float = 1e6, delay_s: float = 0.0) -> float:
    return 0.0005 + 1e-6 * nbytes + wire_bits(nbytes) / bps + delay_s


def split_plan(graph) -> Plan:
    """Host h keeps output rows [0,4) at boundary 4, secondary s computes rows [4,8) from input
    rows [2,8) (its halo), sends them back; h stitches and runs the tail."""
    b = PlanBuilder(graph, "hand", "tiny", "h", ["h", "s"])
    source = b.input()
    t1 = b.transfer("h", "s", 0, graph.rows_needed(0, 4, graph.rows(4, 4, 8)), [source])
    c2 = b.compute("s", 0, 4, graph.rows(4, 4, 8), [t1])
    c3 = b.compute("h", 0, 4, graph.rows(4, 0, 4), [source])
    t4 = b.transfer("s", "h", 4, graph.rows(4, 4, 8), [c2])
    g5 = b.gather("h", 4, graph.full(4), [c3, t4])
    plan = b.build(b.compute("h", 4, 7, graph.full(7), [g5]))
    validate(plan, graph)
    assert [op.id for op in plan.ops] == ["in", "t1", "c2", "c3", "t4", "g5", "c6"]
    return plan


def times(trace, request: int = 0) -> dict[str, tuple[float, float]]:
    return {r.op: (r.start, r.end) for r in trace.ops if r.request == request}


def assert_times(got: dict[str, tuple[float, float]], want: dict[str, tuple[float, float]]) -> None:
    for op, (start, end) in want.items():
        assert got[op][0] == pytest.approx(start, abs=EXACT), f"{op} start"
        assert got[op][1] == pytest.approx(end, abs=EXACT), f"{op} end"


def test_one_request_on_two_devices_runs_at_the_hand_computed_times(tmp_path):
    # Prepare: 1 Mbps star, 2 ms delay; s is twice as fast as h.
    graph = tiny_graph()
    plan = split_plan(graph)
    c = cluster(tmp_path, {"h": 1.0, "s": 2.0}, 1e6, delay_s=0.002)
    # Execute
    trace = simulate_trace(c, graph, plan, [0.0])
    # Assert: t1 carries 192 B (rows 2..8 of 1x8x8), t4 256 B (rows 4..8 of 2x8x8).
    t1 = message_s(192, delay_s=0.002)  # 4.3 ms
    c2 = t1 + 0.021 / 2
    assert_times(times(trace), {
        "in": (0.0, 0.0),
        "t1": (0.0, t1),
        "c3": (0.0, 0.021),                                        # h computes while it sends
        "c2": (t1, c2),
        "t4": (c2, c2 + message_s(256, delay_s=0.002)),            # ends at 19.7 ms
        "g5": (0.021, 0.021 + 512e-6),                             # after c3, in plan order
        "c6": (0.021512, 0.027512),
    })
    assert trace.requests[0].latency == pytest.approx(0.027512, abs=EXACT)
    assert {r.op: r.resource for r in trace.ops}["t4"] == "s->h"
    assert sum(r.bytes for r in trace.ops) == 192 + 256


def test_requests_queue_in_order_on_each_device(tmp_path):
    # Prepare: a second request arrives at 10 ms, while the first is still running.
    graph = tiny_graph()
    plan = split_plan(graph)
    c = cluster(tmp_path, {"h": 1.0, "s": 2.0}, 1e6, delay_s=0.002)
    # Execute
    trace = simulate_trace(c, graph, plan, [0.0, 0.010])
    # Assert: request 1's ops wait for request 0's on the same device (FIFO), even though
    # request 1's c3 has its input long before h is done with request 0's g5 and c6.
    assert_times(times(trace, 0), {"c6": (0.021512, 0.027512)})
    t1 = message_s(192, delay_s=0.002)
    c2 = t1 + 0.0105 + 0.0105  # s finishes request 0's c2 first
    assert_times(times(trace, 1), {
        "in": (0.010, 0.010),
        "t1": (0.010, 0.010 + t1),     # h->s is free again
        "c2": (c2 - 0.0105, c2),
        "t4": (c2, c2 + message_s(256, delay_s=0.002)),
        "c3": (0.027512, 0.048512),    # after request 0's c3, g5 and c6 on h
        "g5": (0.048512, 0.049024),
        "c6": (0.049024, 0.055024),
    })
    assert trace.requests[1].latency == pytest.approx(0.045024, abs=EXACT)


def test_a_transfer_across_a_bandwidth_step_takes_the_integrated_time(tmp_path):
    # Prepare: s's link runs at 1 Mbps until 2 ms, then at 0.5 Mbps.
    graph = tiny_graph()
    plan = split_plan(graph)
    step = BandwidthTrace((0.0, 0.002), (1e6, 0.5e6))
    c = cluster(tmp_path, {"h": 1.0, "s": 2.0}, 1e6, delay_s=0.002, traces={"s": step})
    # Execute
    trace = simulate_trace(c, graph, plan, [0.0])
    # Assert: t1's 1606 bits (192 B framed) start after its 0.692 ms message cost (0.5 ms
    # + 192 x 1 us): 1308 bits at 1 Mbps up to the step, the last 298 at 0.5 Mbps; t4 runs
    # wholly at 0.5 Mbps.
    t1_end = 0.002 + (wire_bits(192) - 1308) / 0.5e6 + 0.002
    t4_start = t1_end + 0.0105
    t4_end = t4_start + message_s(256, 0.5e6, 0.002)
    assert_times(times(trace), {
        "t1": (0.0, t1_end), "c2": (t1_end, t4_start), "t4": (t4_start, t4_end),
        "g5": (t4_end, t4_end + 512e-6), "c6": (t4_end + 512e-6, t4_end + 512e-6 + 0.006),
    })


def three_device_plan(graph) -> Plan:
    """a computes output rows [4,8) and b rows [0,4); the host only sends and stitches."""
    b = PlanBuilder(graph, "hand", "tiny", "h", ["h", "a", "b"])
    source = b.input()
    t1 = b.transfer("h", "a", 0, graph.rows_needed(0, 4, graph.rows(4, 4, 8)), [source])
    t2 = b.transfer("h", "b", 0, graph.rows_needed(0, 4, graph.rows(4, 0, 4)), [source])
    c3 = b.compute("a", 0, 4, graph.rows(4, 4, 8), [t1])
    c4 = b.compute("b", 0, 4, graph.rows(4, 0, 4), [t2])
    t5 = b.transfer("a", "h", 4, graph.rows(4, 4, 8), [c3])
    t6 = b.transfer("b", "h", 4, graph.rows(4, 0, 4), [c4])
    g7 = b.gather("h", 4, graph.full(4), [t5, t6])
    plan = b.build(b.compute("h", 4, 7, graph.full(7), [g7]))
    validate(plan, graph)
    return plan


def ends_after(start: float, *durations: float) -> tuple[tuple[float, float], ...]:
    """(start, end) of each of ops run back to back from `start`."""
    spans, t = [], start
    for d in durations:
        spans.append((t, t + d))
        t += d
    return tuple(spans)


IN, OUT = message_s(192), message_s(256)  # 2.3 and 2.9 ms
# h sends to a and to b at once, on their own links
_c3, _t5 = ends_after(IN, 0.00021, OUT)
_c4, _t6, _g7, _c8 = ends_after(IN, 0.021, OUT, 0.000512, 0.006)
STAR = {"t1": (0.0, IN), "t2": (0.0, IN), "c3": _c3, "t5": _t5, "c4": _c4, "t6": _t6,
        "g7": _g7, "c8": _c8}
# the one channel carries t1, then t2, then t5 (ready at 2.3 ms) after t2
_c4, _t6, _g7, _c8 = ends_after(2 * IN, 0.021, OUT, 0.000512, 0.006)
SHARED = {"t1": (0.0, IN), "t2": (IN, 2 * IN), "c3": (IN, IN + 0.00021),
          "t5": (2 * IN, 2 * IN + OUT), "c4": _c4, "t6": _t6, "g7": _g7, "c8": _c8}


@pytest.mark.parametrize("network, expected", [("star", STAR), ("shared", SHARED)])
def test_star_links_are_separate_and_a_shared_channel_is_not(tmp_path, network, expected):
    # Prepare: a is 100 times faster, so its result is ready while b still computes.
    graph = tiny_graph()
    plan = three_device_plan(graph)
    c = cluster(tmp_path, {"h": 1.0, "a": 100.0, "b": 1.0}, 1e6, network=network)
    # Execute
    trace = simulate_trace(c, graph, plan, [0.0])
    # Assert
    assert_times(times(trace), expected)
    resources = {r.op: r.resource for r in trace.ops}
    assert resources["t5"] == ("channel" if network == "shared" else "a->h")


def test_a_transfer_between_secondaries_holds_both_their_links(tmp_path):
    # Prepare: a forwards its map straight to b; h is sending b the input at the same time.
    graph = tiny_graph()
    b = PlanBuilder(graph, "hand", "tiny", "h", ["h", "a", "b"])
    source = b.input()
    t1 = b.transfer("h", "a", 0, graph.full(0), [source])
    c2 = b.compute("a", 0, 4, graph.full(4), [t1])
    t3 = b.transfer("a", "b", 4, graph.full(4), [c2])
    b.transfer("h", "b", 0, graph.full(0), [source])  # t4: occupies h->b
    c5 = b.compute("b", 4, 7, graph.full(7), [t3])
    plan = b.build(b.transfer("b", "h", 7, graph.full(7), [c5]))
    validate(plan, graph)
    c = cluster(tmp_path, {"h": 1.0, "a": 100.0, "b": 1.0}, {"a": 1e6, "b": 0.5e6})
    # Execute
    trace = simulate_trace(c, graph, plan, [0.0])
    # Assert: t4 starts at once (h sends to a and b in parallel); t3 is ready at 2.8 ms but
    # waits for h->b until t4 ends, then runs at the slower of the two links (0.5 Mbps).
    t1 = message_s(256)
    t3_start = message_s(256, 0.5e6)
    t3_end = t3_start + message_s(512, 0.5e6)
    assert_times(times(trace), {
        "t1": (0.0, t1), "c2": (t1, t1 + 0.00021), "t4": (0.0, t3_start),
        "t3": (t3_start, t3_end), "c5": (t3_end, t3_end + 0.006),
        "t6": (t3_end + 0.006, t3_end + 0.006 + message_s(12, 0.5e6)),
    })
