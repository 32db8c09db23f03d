"""Dilated devices on real Mininet (root only): a two-device run keeps each device at the
speed its profile and `speed` give it, steadily, and says which CPU model it used; three
devices on this machine's cores fall back to the quota."""

from __future__ import annotations

import os
import statistics

import pytest
from conftest import write_scenario

from emu.backend import EmulatedRun
from halp.runtime import TOLERANCE
from halp.scenario import load_scenario
from halp.serving import policy_for
from halp.trace import TraceWriter

from emu_support import emu_required, machine_state  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.emu, pytest.mark.usefixtures("emu_required", "machine_state")]

SCENARIO = """\
name: emu-dilation
seed: 3
model: {{name: mobilenet_v1, width: 1.0, resolution: 224}}
devices:
{devices}
network: {{kind: star, bandwidth: 100Mbps}}
method: {{name: {method}}}
workload: {{requests: {requests}, arrival: periodic, interval: 300ms}}
backends: {{emu: {{timeout: 60s, warmup_requests: 3}}}}
"""


def scenario(tmp_path, devices: int, method: str, requests: int):
    rows = "\n".join(f"  - {{name: d{i}, profile: this-machine, speed: 0.25"
                     + (", role: host}" if i == 0 else "}") for i in range(devices))
    text = SCENARIO.format(devices=rows, method=method, requests=requests)
    return load_scenario(write_scenario(tmp_path, text))


def run(tmp_path, s):
    lines: list[str] = []
    trace = EmulatedRun(s, tmp_path / "run", lines.append).run(
        policy_for(s), TraceWriter(None, "emu", s.method.name))
    return trace, lines


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="dilation needs a core per device")
@pytest.mark.parametrize("method", ["standalone", "halp"])
def test_two_dilated_devices_run_steadily_at_their_speed(tmp_path, method):
    s = scenario(tmp_path, 2, method, requests=16)

    trace, lines = run(tmp_path, s)

    cpu = trace.meta["cpu"]
    assert cpu["cpu_model"] == "dilate"
    assert sorted(d["core"] for d in cpu["devices"].values()) == sorted(os.sched_getaffinity(0))[:2]
    assert any(line.startswith("cpu model dilate") for line in lines)
    assert all(r.max_abs_error is not None and r.max_abs_error <= TOLERANCE for r in trace.requests)
    # The same plan every time: a steady device repeats itself. Spread as the median absolute
    # deviation: this VM's own speed can shift mid-run (in one CI run 4 requests at 75 ms, then
    # 12 at 69), which the median ignores and a quota's whole-period steps would not escape.
    latencies = trace.latencies()
    middle = statistics.median(latencies)
    spread = statistics.median(abs(x - middle) for x in latencies)
    assert spread < 0.05 * middle, latencies
    # The host's ops took a quarter of this machine's speed: 4x their CPU time, about.
    slowdown = cpu["devices"]["d0"]["slowdown"]
    assert 2.5 < slowdown < 6.5


def test_three_devices_on_two_cores_fall_back_to_the_quota(tmp_path):
    if len(os.sched_getaffinity(0)) >= 3:
        pytest.skip("this machine has a core for each of three devices")
    s = scenario(tmp_path, 3, "halp", requests=2)

    trace, lines = run(tmp_path, s)

    assert trace.meta["cpu"]["cpu_model"] == "quota"
    assert any("quota model, not dilation: 3 devices need a core each" in line for line in lines)
    assert all(d["core"] is None for d in trace.meta["cpu"]["devices"].values())
