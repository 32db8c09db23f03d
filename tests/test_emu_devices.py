"""How the emulator holds each device to the speed the simulator gives it (emu.devices): the
slowdown against this machine's probe, and which CPU model can hold it."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import write_scenario

from emu.devices import DILATE, QUOTA, plan_devices
from emu.topology import describe
from halp.errors import BackendError
from halp.latency.probe import LAYERS
from halp.latency.profile import load_profile
from halp.scenario import load_scenario

# This machine as the probe sees it now, and a profile measured on it when it was as fast.
NOW = {name: 0.001 * (i + 1) for i, name in enumerate(LAYERS)}
HERE = dataclasses.replace(load_profile("this-machine"), name="here", provenance={
    "kind": "measured", "threads": 1, "cpu_share": 1.0, "probe": dict(NOW)})


def scenario(tmp_path, devices: str, emu: str = "{}"):
    text = f"""\
name: t
model: {{name: mobilenet_v1, width: 0.25, resolution: 128}}
devices:
{devices}
network: {{kind: star, bandwidth: 100Mbps}}
method: {{name: halp}}
backends: {{emu: {emu}}}
"""
    return load_scenario(write_scenario(tmp_path, text))


def plan(s, profiles=None, cores=(0, 1), now=NOW, work=None):
    asked: list[int] = []

    def probe(threads: int):
        asked.append(threads)
        return now

    profiles = profiles or {}
    by_device = {d.name: profiles.get(d.name, HERE) for d in s.devices}
    return plan_devices(s, by_device, list(cores), probe, work), asked


def test_two_devices_on_two_cores_are_dilated_by_their_speed(tmp_path):
    s = scenario(tmp_path, "  - {name: a, role: host, profile: this-machine, speed: 0.25}\n"
                           "  - {name: b, profile: this-machine, speed: 0.5}")

    devices, asked = plan(s, cores=(2, 5))

    assert devices.model == DILATE
    assert [(d.core, round(d.slowdown, 6)) for d in devices.devices] == [(2, 4.0), (5, 2.0)]
    assert asked == [1]  # one probe per thread count
    topo = describe(s, "dv1", 2, devices)
    assert topo.cpu_model == DILATE and topo.cpu_fraction("a") == -1.0
    assert "dilate" in devices.summary() and devices.notes == ()


def test_the_slowdown_follows_the_machine_when_it_drifts(tmp_path):
    s = scenario(tmp_path, "  - {name: a, role: host, profile: this-machine, speed: 0.25}")
    slower_now = {k: 2 * v for k, v in NOW.items()}  # this machine is half as fast as profiled

    devices, _ = plan(s, now=slower_now)

    assert devices.devices[0].slowdown == pytest.approx(2.0)  # 4x the profile's, 2x today


def test_more_devices_than_cores_are_held_by_a_quota_and_say_why(tmp_path):
    s = scenario(tmp_path, "\n".join(f"  - {{name: d{i}, profile: this-machine, speed: 0.25"
                                     + (", role: host}" if i == 0 else "}") for i in range(3)))

    devices, _ = plan(s)

    assert devices.model == QUOTA
    assert [d.cpu_share for d in devices.devices] == pytest.approx([0.25] * 3)
    assert all(d.core is None for d in devices.devices)
    assert any("3 devices need a core each" in n for n in devices.notes)
    assert any("steps of one" in n for n in devices.notes)
    assert describe(s, "dv2", 2, devices).cpu_fraction("d1") == pytest.approx(0.125)


def test_asking_for_dilation_without_the_cores_is_refused_in_one_line(tmp_path):
    s = scenario(tmp_path, "  - {name: a, role: host, profile: this-machine, speed: 0.5}\n"
                           "  - {name: b, profile: this-machine, threads: 2, speed: 0.5}",
                 emu="{cpu_model: dilate}")

    with pytest.raises(BackendError, match="b compute with more than one thread") as err:
        plan(s)
    assert "\n" not in str(err.value)


def test_a_quota_can_be_asked_for_and_a_quota_profile_always_gets_one(tmp_path):
    s = scenario(tmp_path, "  - {name: a, role: host, profile: this-machine, speed: 0.5}",
                 emu="{cpu_model: quota}")
    assert plan(s)[0].model == QUOTA
    s = scenario(tmp_path, "  - {name: a, role: host, profile: emu-q}")

    devices, asked = plan(s, {"a": load_profile("emu-q")})

    assert devices.model == QUOTA and devices.devices[0].cpu_share == 0.25
    assert any("measured under a CPU quota" in n for n in devices.notes)


def test_a_written_cpu_share_rules_and_a_disagreeing_profile_is_named(tmp_path):
    s = scenario(tmp_path, "  - {name: a, role: host, profile: this-machine, cpu_share: 0.5}\n"
                           "  - {name: b, profile: this-machine, cpu_share: 0.25, speed: 0.25}")

    devices, _ = plan(s)

    assert [d.slowdown for d in devices.devices] == [2.0, 4.0]
    warned = [n for n in devices.notes if n.startswith("warning")]
    assert len(warned) == 1 and "device a: cpu_share 0.5" in warned[0]


def test_a_device_faster_than_this_machine_is_refused(tmp_path):
    s = scenario(tmp_path, "  - {name: a, role: host, profile: this-machine, speed: 3}")

    with pytest.raises(BackendError, match="devices.a: .* 3.00x faster") as err:
        plan(s)
    assert "\n" not in str(err.value)


def test_a_tiny_share_lengthens_the_period_to_the_kernels_minimum_quota(tmp_path):
    s = scenario(tmp_path, "  - {name: a, role: host, profile: this-machine, speed: 0.02}",
                 emu="{cpu_model: quota}")

    devices, _ = plan(s)

    assert devices.devices[0].cpu_share == pytest.approx(0.02)
    assert devices.cfs_period_us * 0.02 >= 1000
    assert describe(s, "dv3", 2, devices).cfs_period_us == devices.cfs_period_us


def test_a_derived_profile_is_compared_by_its_predictions_and_its_shape_is_named(tmp_path):
    # rpi4 was fitted to published Pi 4 times: depthwise layers far slower than the rest.
    s = scenario(tmp_path, "  - {name: a, role: host, profile: rpi4}")
    pi = load_profile("rpi4")
    from halp.latency.probe import predicted_probe

    predicted = predicted_probe(pi)
    devices, _ = plan(s, {"a": pi}, now=predicted)  # this machine as fast as the Pi: 1x

    assert devices.devices[0].slowdown == pytest.approx(1.0)
    devices, _ = plan(s, {"a": pi}, now={k: v / 8 for k, v in predicted.items()})
    assert devices.devices[0].slowdown == pytest.approx(8.0)
    skewed = {k: v / (16 if k == "dwconv3x3" else 8) for k, v in predicted.items()}
    notes = plan(s, {"a": pi}, now=skewed)[0].notes
    assert any("not this machine scaled by one factor" in n for n in notes)


def test_the_slowdown_is_measured_on_the_devices_own_ops(tmp_path):
    from emu.devices import COVER, ops_of, timed_work
    from halp.serving import policy_for

    s = scenario(tmp_path, "  - {name: a, role: host, profile: this-machine, speed: 0.5}\n"
                           "  - {name: b, profile: this-machine, speed: 0.25}")
    s = s.with_values({"model": {"name": "vgg16"}})
    served = [(x.plan, x.prepared.graph) for x in policy_for(s).served()]
    ops = ops_of(served, {"a": HERE, "b": HERE})
    assert set(ops) == {"a", "b"}  # HALP gives both devices work
    (halp_plan, graph), = served
    for device, mine in ops.items():
        total = sum(HERE.op_overhead_s + sum(HERE.layer_s(*r) for r in graph.layer_regions(
            op.start, op.stop, op.out)) for op in halp_plan.ops
            if op.kind == "compute" and op.device == device)
        timed = sum(op.count * op.predicted_s for op in mine)
        assert COVER * total <= timed <= total * (1 + 1e-9)  # the heaviest, most of the work
        assert {op.kind for op in mine} <= {"conv3x3", "linear", "pool"}

    # Timed here exactly as predicted: each device runs at its speed. Then only the 3x3
    # convolutions drift (2x slower here now): the slowdown follows them, by their share.
    def work(drift: float):
        return {d: timed_work(mine, [op.predicted_s * (drift if op.kind == "conv3x3" else 1)
                                     for op in mine]) for d, mine in ops.items()}

    steady, _ = plan(s, work=work(1.0))
    drifted, asked = plan(s, work=work(2.0))

    assert [d.slowdown for d in steady.devices] == pytest.approx([2.0, 4.0])
    assert asked == []  # no fixed probe layers were needed
    conv = {d: w.by_kind["conv3x3"][0] / w.predicted_s for d, w in work(1.0).items()}
    assert conv["a"] > 0.8
    for dev, speed in zip(drifted.devices, (0.5, 0.25), strict=True):
        assert dev.slowdown == pytest.approx(1 / speed / (1 + conv[dev.name]))
        assert "on its ops" in dev.source


def test_a_device_whose_kinds_drifted_apart_is_named_unless_the_kind_is_small(tmp_path):
    from emu.devices import Work

    s = scenario(tmp_path, "  - {name: a, role: host, profile: this-machine, speed: 0.5}")
    apart = Work({"conv3x3": (1.0, 0.25), "linear": (1.0, 0.5)})  # 4x and 2x slower here
    small = Work({"conv3x3": (1.0, 0.25), "linear": (0.05, 0.1)})  # the 2x kind is 5% of it

    named, _ = plan(s, work={"a": apart})
    quiet, _ = plan(s, work={"a": small})

    assert apart.spread() == pytest.approx(2.0) and small.spread() == 1.0
    assert named.devices[0].slowdown == pytest.approx(2.0 / 0.75 / 0.5)
    assert any("device a" in n and "one factor" in n for n in named.notes)
    assert not any("one factor" in n for n in quiet.notes)


def test_devices_of_one_kind_pool_their_work_into_one_speed(tmp_path):
    from emu.devices import Work

    s = scenario(tmp_path, "  - {name: a, role: host, profile: this-machine, speed: 0.5}\n"
                           "  - {name: b, profile: this-machine, speed: 0.5}\n"
                           "  - {name: c, profile: this-machine, speed: 0.25}")
    work = {"a": Work({"conv3x3": (3.0, 1.0)}),  # 3x here, at speed 1
            "b": Work({"conv3x3": (1.0, 0.5)}),  # 2x: small slices, say
            "c": Work({"conv3x3": (1.0, 0.5)})}

    devices, _ = plan(s, cores=(0, 1, 2), work=work)
    idle, _ = plan(s, cores=(0, 1, 2), work={"a": work["a"]})  # b computes nothing

    a, b, c = (d.slowdown for d in devices.devices)
    assert a == b == pytest.approx(4.0 / 1.5 / 0.5)  # (3 + 1) / (1 + 0.5), at speed 0.5
    assert c == pytest.approx(2.0 / 0.25)  # another kind keeps its own
    assert idle.devices[1].slowdown == pytest.approx(3.0 / 0.5)  # b is of a's kind
