"""What a plan makes each device hold (halp.memory), counted by hand on tiny real plans, and
memory limits that planners respect (halp.methods)."""

from __future__ import annotations

import dataclasses

import pytest
from torch import nn

from halp.cli import main
from halp.cli.run_cmd import resident_line
from halp.errors import PlanError, ScenarioError
from halp.latency.model import LatencyModel
from halp.memory import fits, memory_report, plan_memory, weights_bytes
from halp.methods import plan_for
from halp.methods.common import PlanBuilder
from halp.model.trace import trace_model
from halp.plan import validate
from halp.scenario import HalpMethod, ModnnMethod, OffloadMethod, StandaloneMethod, parse_scenario
from halp.units import format_bytes, memory_bytes

from support import cluster


def two_convs(size: int = 8):
    """1 channel -> 2 -> 1, both 3x3 with padding 1, on a 1 x size x size input: conv1 has
    2*9 + 2 = 20 parameters (80 bytes), conv2 1*2*9 + 1 = 19 (76 bytes)."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 1, 3, padding=1))
    return trace_model(net, (1, size, size), "two-convs")


def limited(c, **limits):
    """The cluster with some devices' memory limits (bytes)."""
    devices = tuple(dataclasses.replace(d, memory_bytes=limits.get(d.name, d.memory_bytes))
                    for d in c.devices)
    return dataclasses.replace(c, devices=devices)


def test_modnn_on_two_devices_needs_what_a_hand_count_says():
    graph = two_convs()
    c, latency = cluster([1.0, 1.0])
    plan = plan_for(ModnnMethod(name="modnn"), graph, c, latency, "two-convs")
    # Equal devices share each layer's 8 output rows 4 and 4; d1 gets input rows 3:8 (its halo).
    computes = [(op.device, op.start, op.out.rows) for op in plan.ops if op.kind == "compute"]
    assert computes == [("d1", 0, (4, 8)), ("d0", 0, (0, 4)), ("d1", 1, (4, 8)), ("d0", 1, (0, 4))]
    need = plan_memory(plan, graph)
    # Both compute rows of both convolutions: 80 + 76 bytes of weights each.
    assert need["d0"].weights_bytes == need["d1"].weights_bytes == 156
    # The host, at the first gather: its own rows 0:4 of conv1 (2 x 4 x 8 floats, 256 B), d1's
    # rows received (256 B) and the gathered map (2 x 8 x 8, 512 B); the input is gone by then
    # (its last reader, the host's first compute, has run).
    assert need["d0"].peak_activation_bytes == 256 + 256 + 512
    # d1, computing conv2: the rows 3:8 of conv1's map it received (2 x 5 x 8, 320 B) and
    # its output rows 4:8 (1 x 4 x 8, 128 B); earlier, conv1's 160 B of input and 256 B out.
    assert need["d1"].peak_activation_bytes == 320 + 128
    assert need["d0"].total_bytes == 156 + 1024


def test_a_measured_run_reports_each_devices_resident_memory_beside_its_need():
    graph = two_convs()
    c, latency = cluster([1.0, 1.0])
    needs = [plan_memory(plan_for(ModnnMethod(name="modnn"), graph, c, latency, "two-convs"),
                         graph)]
    simulated = memory_report(needs, c)  # no process measured anything
    assert "resident_source" not in simulated
    assert all("resident_bytes" not in m for m in simulated["per_device"].values())
    assert resident_line(simulated) is None
    measured = memory_report(needs, c, {"d0": {"rss": 300_000_000, "peak": 412_000_000},
                                        "d1": {"rss": 250_000_000, "peak": 251_000_000},
                                        "d9": {"rss": 1, "peak": 1}})
    d0 = measured["per_device"]["d0"]
    assert (d0["resident_bytes"], d0["peak_resident_bytes"]) == (300_000_000, 412_000_000)
    assert d0["total_bytes"] == 156 + 1024  # the plan's figure stays beside it
    assert set(measured["per_device"]) == {"d0", "d1"}  # only the plan's devices
    assert "VmRSS" in measured["resident_source"]
    assert resident_line(measured) == (
        "resident memory measured after the last request: d0 300.0 MB (peak 412.0, plan 0.0), "
        "d1 250.0 MB (peak 251.0, plan 0.0)")


def test_standalone_holds_the_input_and_two_maps_while_it_computes():
    graph = two_convs()
    c, latency = cluster([1.0, 1.0])
    need = plan_memory(plan_for(StandaloneMethod(name="standalone"), graph, c, latency, "t"), graph)
    # One fused op: while conv2 runs, conv1's whole map (512 B) and the output (256 B), beside
    # the input block it read (256 B).
    assert need["d0"] == dataclasses.replace(need["d0"], weights_bytes=156,
                                             peak_activation_bytes=256 + 512 + 256)
    assert need["d1"].total_bytes == 0


def test_a_linear_layer_counts_only_the_rows_of_weights_a_device_computes():
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8))  # 16*8 + 8 = 136 parameters, 544 B
    graph = trace_model(net, (1, 4, 4), "fc")
    c, _ = cluster([1.0, 1.0])
    b = PlanBuilder(graph, "hand", "fc", "d0", c.names)
    flat = b.compute("d0", 0, 1, graph.full(1), [b.input()])
    sent = b.transfer("d0", "d1", 1, graph.full(1), [flat])
    # d1 computes features 0:3 and 2:4 (4 features together) and 6:8; the host 4:6.
    pieces = [b.compute("d1", 1, 2, graph.rows(2, 0, 3), [sent]),
              b.compute("d1", 1, 2, graph.rows(2, 2, 4), [sent]),
              b.compute("d1", 1, 2, graph.rows(2, 6, 8), [sent])]
    back = [b.transfer("d1", "d0", 2, graph.rows(2, *r), [p])
            for p, r in zip(pieces, [(0, 3), (2, 4), (6, 8)], strict=True)]
    mine = b.compute("d0", 1, 2, graph.rows(2, 4, 6), [flat])
    plan = b.build(b.gather("d0", 2, graph.full(2), [*back, mine]))
    validate(plan, graph)
    assert weights_bytes(plan, graph) == {"d1": 544 * 6 // 8, "d0": 544 * 2 // 8}


def test_a_secondary_too_small_for_its_part_is_left_out():
    graph = two_convs()
    c, latency = cluster([1.0, 1.0])
    small = limited(c, d1=600)  # d1 needs 156 + 448 = 604 bytes of MoDNN's plan
    plan = plan_for(ModnnMethod(name="modnn"), graph, small, LatencyModel(small), "t")
    assert {op.device for op in plan.ops} == {"d0"}
    assert plan.meta["left_out_for_memory"] == ["d1"]
    assert fits(plan, graph, small)


def test_a_host_too_small_is_refused_in_one_line_naming_it_its_need_and_its_limit():
    graph = two_convs()
    c, latency = cluster([1.0, 1.0])
    small = limited(c, d0=1000)
    for method in (ModnnMethod(name="modnn"), StandaloneMethod(name="standalone")):
        with pytest.raises(PlanError) as info:
            plan_for(method, graph, small, LatencyModel(small), "t")
        message = str(info.value)
        assert "\n" not in message
        assert "on d0" in message and "1.18kB" in message and "memory 1kB" in message, message


def test_offload_picks_the_fastest_split_that_fits():
    graph = two_convs(32)
    c, latency = cluster([1.0, 1.0], 1e3)  # a slow link: offloading nothing is fastest
    free = plan_for(OffloadMethod(name="offload"), graph, c, latency, "t")
    assert free.meta["cut"] == len(graph)
    need = plan_memory(free, graph)["d0"].total_bytes
    small = limited(c, d0=need - 1)
    plan = plan_for(OffloadMethod(name="offload"), graph, small, LatencyModel(small), "t")
    assert plan.meta["cut"] < len(graph)
    assert plan_memory(plan, graph)["d0"].total_bytes <= need - 1


def test_halp_leaves_the_classifier_to_the_host_before_leaving_a_secondary_out():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 16 * 16, 512))
    graph = trace_model(net, (3, 16, 16), "conv-fc")
    c, latency = cluster([1.0, 1.0, 1.0], 1e9)
    shared = plan_for(HalpMethod(name="halp"), graph, c, latency, "t")
    need = plan_memory(shared, graph)
    assert need["d1"].weights_bytes > 200_000  # a share of the 8 MB classifier
    small = limited(c, d1=200_000, d2=200_000)
    plan = plan_for(HalpMethod(name="halp"), graph, small, LatencyModel(small), "t")
    assert fits(plan, graph, small)
    assert "left_out_for_memory" not in plan.meta
    tail = graph.spatial_end
    assert {op.device for op in plan.ops if op.kind == "compute" and op.stop > tail} == {"d0"}


@pytest.mark.parametrize("text, value", [("1GB", 1e9), ("512MB", 512e6), ("1GiB", 2**30),
                                         ("512 MiB", 512 * 2**20), ("800kB", 8e5)])
def test_memory_sizes_parse_to_bytes(text, value):
    assert memory_bytes(text) == value


def test_a_formatted_size_parses_back():
    for n in (800.0, 512e6, 1.5e9):
        assert memory_bytes(format_bytes(n)) == pytest.approx(n, rel=1e-3)


SCENARIO = {"name": "m", "model": {"name": "vgg16"},
            "devices": [{"name": "a", "role": "host", "profile": "rpi4", "memory": "1GB"}],
            "network": {"bandwidth": "10Mbps"}, "method": {"name": "halp"}}


@pytest.mark.parametrize("value, reason", [
    ("0GB", "must be positive"), ("10B", "must be from 1kB"), ("2PB", "unknown memory size unit"),
    (1024, "needs a unit"), ("1e400GB", "not a finite number"), (True, "expected a memory size")])
def test_a_bad_memory_limit_is_refused_naming_the_field(value, reason):
    data = {**SCENARIO, "devices": [{**SCENARIO["devices"][0], "memory": value}]}
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data, "s.yaml")
    assert "devices.0.memory" in str(info.value) and reason in str(info.value)


def test_a_memory_limit_reaches_the_planners_and_survives_a_dump():
    scenario = parse_scenario(SCENARIO, "s.yaml")
    assert scenario.cluster().device("a").memory_bytes == 1e9
    again = scenario.with_values({"devices.a.memory": "512MiB"})
    assert again.cluster().device("a").memory_bytes == 512 * 2**20
    assert "memory: 536870912B" in again.to_yaml()


def test_halp_plan_refuses_a_scenario_whose_host_cannot_hold_the_model(tmp_path, capsys):
    (tmp_path / "net.py").write_text(
        "from torch import nn\n\ndef build():\n"
        "    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 1, 3, padding=1))\n")
    (tmp_path / "s.yaml").write_text(
        "name: tiny\nmodel: {name: custom, factory: net.py:build, input_shape: [1, 64, 64]}\n"
        "devices:\n  - {name: a, role: host, profile: rpi4, memory: 50kB}\n"
        "network: {bandwidth: 10Mbps}\nmethod: {name: standalone}\n")
    assert main(["plan", str(tmp_path / "s.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "plan standalone needs" in err and "on a" in err and "memory 50kB" in err


def test_halp_plan_shows_memory_per_device(tmp_path, capsys):
    (tmp_path / "net.py").write_text(
        "from torch import nn\n\ndef build():\n"
        "    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 1, 3, padding=1))\n")
    (tmp_path / "s.yaml").write_text(
        "name: tiny\nmodel: {name: custom, factory: net.py:build, input_shape: [1, 64, 64]}\n"
        "devices:\n  - {name: a, role: host, profile: rpi4, memory: 1MB}\n"
        "  - {name: b, profile: rpi4}\nnetwork: {bandwidth: 10Mbps}\nmethod: {name: modnn}\n")
    assert main(["plan", str(tmp_path / "s.yaml")]) == 0
    out = capsys.readouterr().out
    assert "memory per device" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["a"], ["b"])}
    assert rows["a"][-1] == "1" and rows["b"][-1] == "-"  # the limit column, MB
