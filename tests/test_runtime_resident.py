"""A device's resident memory is read from the kernel, and what a worker reports is checked."""

from __future__ import annotations

import pytest
import torch

from halp.runtime.device import BlockStore
from halp.runtime.hub import Hub
from halp.runtime.resident import checked_resident, parse_status, resident
from halp.runtime.wire import Message, MsgType, WireError

STATUS = """Name:\tpython
VmPeak:\t 2000000 kB
VmHWM:\t  900000 kB
VmRSS:\t  600000 kB
Threads:\t4
"""


def test_resident_memory_is_this_process_as_the_kernel_counts_it():
    before = resident()
    assert before is not None and 0 < before["rss"] <= before["peak"]
    block = torch.ones(16 << 20)  # 64 MB, every page written
    after = resident()
    assert after is not None
    assert after["rss"] - before["rss"] >= 0.9 * block.nbytes
    assert after["peak"] >= after["rss"]


def test_the_status_figures_are_read_in_bytes():
    assert parse_status(STATUS) == {"rss": 600000 * 1024, "peak": 900000 * 1024}


def test_no_figures_where_the_kernel_gives_none(tmp_path):
    assert resident(tmp_path / "absent") is None
    (tmp_path / "status").write_text("Name:\tkthreadd\nThreads:\t1\n")
    assert resident(tmp_path / "status") is None


def test_a_received_reading_is_taken_as_it_is_when_it_makes_sense():
    assert checked_resident(None) is None  # a worker without /proc
    assert checked_resident({"rss": 5, "peak": 7}) == {"rss": 5, "peak": 7}


@pytest.mark.parametrize("value, why", [
    ({"rss": -1, "peak": 7}, "rss -1 is not a whole number of bytes"),
    ({"rss": 1.5, "peak": 7}, "rss 1.5 is not a whole number of bytes"),
    ({"rss": True, "peak": 7}, "rss True is not a whole number of bytes"),
    ({"rss": "5", "peak": 7}, "rss '5' is not a whole number of bytes"),
    ({"rss": 5, "peak": 1 << 50}, "peak 1125899906842624 is not a whole number"),
    ({"rss": 5}, "is not {\"rss\": bytes, \"peak\": bytes}"),
    ({"rss": 5, "peak": 7, "swap": 0}, "is not {\"rss\": bytes"),
    ([5, 7], "is not {\"rss\": bytes"),
    ({"rss": 9, "peak": 7}, "peak 7 is below its current 9"),
])
def test_a_bad_reading_is_refused_in_one_line(value, why):
    with pytest.raises(WireError, match=why.replace("(", r"\(")) as info:
        checked_resident(value)
    assert "\n" not in str(info.value)


def test_a_report_with_a_bad_reading_fails_the_run_naming_the_device():
    store = BlockStore()
    hub = Hub({"w1": "tcp://127.0.0.1:9"}, b"t" * 32, "h", {}, store)  # never started
    try:
        link = hub.links["w1"]
        link.state = "ready"
        report = {"plan_id": 0, "ops": [], "sent": {}, "arrived": {}}
        hub._on_message(link, Message(MsgType.REPORT, request=3,
                                      body={**report, "resident": {"rss": 10, "peak": 12}}), 0.0)
        assert link.resident == {"rss": 10, "peak": 12} and hub.failure is None
        hub._on_message(link, Message(MsgType.REPORT, request=4,
                                      body={**report, "resident": {"rss": -1, "peak": 12}}), 0.0)
        assert hub.failure == ("device w1 sent a bad report of request 4: resident memory rss -1 "
                               "is not a whole number of bytes from 0 to 1099511627776")
        assert store.failure == hub.failure and (4, "w1") not in hub.reports
        assert link.resident == {"rss": 10, "peak": 12}
    finally:
        hub.stop()
