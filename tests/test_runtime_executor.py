"""The host executor's own decisions (its runs over real sockets are in test_runtime_run)."""

from __future__ import annotations

from halp.runtime.executor import SETTLE_MAX_S, settle_s


def test_request_0_finds_things_as_idle_as_request_1_will():
    assert settle_s([0.0, 0.25, 0.5]) == 0.25
    assert settle_s([0.0, 0.0]) == 0.0  # a burst: request 1 will not wait either
    assert settle_s([0.0, 5.0]) == SETTLE_MAX_S
    assert settle_s([0.0]) == SETTLE_MAX_S  # a lone request meets an idle cluster, as simulated
