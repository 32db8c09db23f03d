"""A request is reported once, when its ops ran, its blocks left and every block for it came."""

from __future__ import annotations

import pytest
from runtime_support import whole_model_on

from halp.model.trace import trace_model
from halp.model.zoo import ModelSpec, build_model
from halp.runtime.request_state import RequestState, RequestTable
from halp.runtime.wire import WireError

SPEC = ModelSpec("mobilenet_v1", width=0.25, resolution=128, seed=3)


@pytest.fixture(scope="module")
def plan():
    graph = trace_model(build_model(SPEC), SPEC.shape, SPEC.variant)
    return whole_model_on(graph, SPEC.variant, "w1")  # in -> t1 (h->w1) -> c2 (w1) -> t3 (w1->h)


def test_what_a_device_waits_for_follows_the_plan(plan):
    worker = RequestState.of(7, plan, "w1")
    assert (worker.expect, worker.compute_left, worker.sends_left) == ({"t1"}, True, 1)
    host = RequestState.of(7, plan, "h")  # the host computes nothing in this plan
    assert (host.expect, host.compute_left, host.sends_left) == ({"t3"}, False, 1)
    assert RequestState.of(7, plan, "w2").done  # a device the plan does not use


@pytest.mark.parametrize("order", [("data", "compute", "send"), ("compute", "send", "data"),
                                   ("send", "data", "compute")])
def test_a_request_is_reported_once_whatever_finishes_last(plan, order):
    table = RequestTable()
    table.check_new(5)
    state = table.add(5, RequestState.of(0, plan, "w1"))
    steps = {"data": lambda: state.received("t1", 1.0, 4096),
             "compute": lambda: state.computed([("c2", 1.5, 2.0)]),
             "send": state.peer_done}
    for step in order:
        assert table.take_done(5) is None
        steps[step]()
    assert table.take_done(5) is state
    assert table.take_done(5) is None and table.get(5) is None
    assert state.report() == {"plan_id": 0, "ops": [["c2", 1.5, 2.0]], "sent": {},
                              "arrived": {"t1": [1.0, 4096]}}
    with pytest.raises(WireError, match="request 5 is already done here"):
        table.check_new(5)


def test_a_failed_request_cannot_start_again_until_the_table_is_cleared(plan):
    table = RequestTable()
    table.add(3, RequestState.of(0, plan, "w1"))
    table.fail(3)
    assert table.get(3) is None
    with pytest.raises(WireError, match="already done"):
        table.check_new(3)
    table.clear()  # a RESET or a new run
    table.check_new(3)
