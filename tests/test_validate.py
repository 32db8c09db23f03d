"""Validation joins two traces of the same plans on (request, op) and measures the gap."""

from __future__ import annotations

import json

import pytest

from halp.cluster import Cluster, Device
from halp.latency.profile import load_profile
from halp.trace import OpRecord, RequestRecord, Trace
from halp.validate import compare, emulation_mismatches, format_summary, scatter


def trace(backend: str, latency: dict[int, float], compute_s: float, transfer_s: float) -> Trace:
    t = Trace(backend=backend, method="halp")
    for r, lat in latency.items():
        t0 = 10.0 * r
        t.ops += [
            OpRecord(r, "in", "input", "a", "a", t0, t0),
            OpRecord(r, "c1", "compute", "a", "a", t0, t0 + compute_s),
            OpRecord(r, "t1", "transfer", "a->b", "a", t0, t0 + transfer_s, bytes=1000),
        ]
        t.requests.append(RequestRecord(r, t0, t0 + lat, "halp", "m"))
    return t


def test_errors_are_relative_to_the_measured_run():
    predicted = trace("sim", {0: 0.9, 1: 1.1}, compute_s=0.5, transfer_s=0.2)
    measured = trace("emu", {0: 1.0, 1: 1.0}, compute_s=0.4, transfer_s=0.25)

    summary = compare(predicted, measured).summary()

    assert summary["requests"] == 2
    assert summary["latency_error_mean"] == pytest.approx(0.1)
    assert summary["latency_error_max"] == pytest.approx(0.1)
    assert summary["latency_abs_error_max_s"] == pytest.approx(0.1)
    assert summary["compute_op_mape"] == pytest.approx(25.0)  # |0.5 - 0.4| / 0.4
    assert summary["transfer_op_mape"] == pytest.approx(20.0)  # |0.2 - 0.25| / 0.25
    assert summary["gather_op_mape"] is None
    json.dumps(summary)  # the JSON the CLI prints


def test_the_error_splits_into_the_runs_bias_and_the_spread_between_requests():
    predicted = {0: 1.0, 1: 1.0, 2: 2.0}
    uniformly_slower = compare(trace("sim", predicted, 0.5, 0.2),
                               trace("emu", {r: 1.2 * p for r, p in predicted.items()}, 0.5, 0.2))
    spread_around_it = compare(trace("sim", predicted, 0.5, 0.2),
                               trace("emu", {0: 0.8, 1: 1.2, 2: 2.0}, 0.5, 0.2))

    slower = uniformly_slower.summary()
    spread = spread_around_it.summary()

    # A profile off by one factor: all bias, no spread, though every request misses by 1/6.
    assert slower["latency_error_mean"] == pytest.approx(0.2 / 1.2)
    assert slower["latency_bias"] == pytest.approx(0.2)
    assert slower["latency_spread_mean"] == pytest.approx(0.0)
    # Requests scattered around an unbiased prediction: the spread is the whole error.
    assert spread["latency_bias"] == pytest.approx(0.0)
    assert spread["latency_spread_mean"] == pytest.approx(spread["latency_error_mean"])
    assert spread["latency_spread_mean"] == pytest.approx((0.2 / 0.8 + 0.2 / 1.2) / 3)
    assert "20.0% slower" in format_summary(slower)


def test_requests_only_one_side_finished_are_counted_not_compared():
    predicted = trace("sim", {0: 1.0, 1: 1.0, 2: 1.0}, 0.5, 0.2)
    measured = trace("emu", {0: 1.0, 1: 1.0}, 0.5, 0.2)
    measured.ops.pop()  # one op of request 1 missing

    validation = compare(predicted, measured)

    assert validation.requests == 2
    assert validation.only_predicted == 1
    assert validation.unmatched_ops == 1
    assert validation.summary()["latency_error_mean"] == 0.0


def test_summary_reads_as_one_verdict_and_plot_is_written(tmp_path):
    predicted = trace("sim", {0: 1.3}, 0.5, 0.2)
    measured = trace("emu", {0: 1.0}, 0.5, 0.2)
    validation = compare(predicted, measured)

    text = format_summary(validation.summary(), target=0.1)
    path = scatter(validation, tmp_path / "v.png", title="t")

    assert "30.0%" in text and "OUTSIDE" in text
    assert path.is_file() and path.stat().st_size > 1000


def test_nothing_to_compare_says_so():
    empty = Trace(backend="emu", method="halp")
    summary = compare(trace("sim", {0: 1.0}, 0.5, 0.2), empty).summary()
    assert summary["latency_error_mean"] is None
    assert "nothing to compare" in format_summary(summary)


EMU_SCENARIO = """\
name: validate-emu
seed: 3
model: {name: mobilenet_v1, width: 0.25, resolution: 128}
devices:
  - {name: a, role: host, profile: emu-q, cpu_share: 0.25, speed: 0.05}
  - {name: b, profile: emu-q, cpu_share: 0.25}
network: {kind: star, bandwidth: 50Mbps}
method: {name: halp}
workload: {requests: 2, arrival: periodic, interval: 100ms}
"""


@pytest.mark.emu
@pytest.mark.slow
@pytest.mark.long  # 46 s; emulated runs and validation's arithmetic are both in `make test`
def test_validate_against_the_emulator_writes_json_and_plot(tmp_path, capsys):
    from halp.cli import main

    from emu_support import require_emu

    require_emu()
    path = tmp_path / "s.yaml"
    path.write_text(EMU_SCENARIO)

    code = main(["validate", str(path), "--against", "emu", "--json", "--calibrate",
                 "--out", str(tmp_path / "v")])

    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    # --calibrate: the devices simulated at the speed probed around the run, and the errors
    # at the profile's speed kept beside: slower now than profiled means a longer prediction.
    used = summary["calibration"]["emu-q"]
    factor = used["factor"]
    assert factor == pytest.approx((used["slowdown_before"] * used["slowdown_after"]) ** 0.5,
                                   rel=1e-3)
    plain = summary["uncalibrated"]["predicted_latency_mean_s"]
    assert (summary["predicted_latency_mean_s"] > plain) == (factor > 1.0)
    assert {"requests", "latency_error_mean", "latency_error_max", "compute_op_mape",
            "transfer_op_mape"} <= set(summary)
    assert summary["requests"] == 2 and summary["unmatched_ops"] == 0
    assert set(summary["profiles"]) == {"emu-q"}  # checked against this machine first
    for name in ("validation.json", "validation.png", "sim/ops.jsonl", "emu/ops.jsonl"):
        assert (tmp_path / "v" / name).is_file()



def test_devices_predicted_as_another_device_than_emulated_are_named():
    # emu-q was measured on a quarter core of this machine: it describes that quota only.
    # Devices on other profiles follow their profile's speed in the emulator (emu.devices,
    # whose probe of this machine says how far a written cpu_share is from it).
    quarter, full, derived = (load_profile(n) for n in ("emu-q", "this-machine", "rpi4"))
    cluster = Cluster((Device("ok", quarter, cpu_share=0.25),
                       Device("half", quarter, cpu_share=0.5),
                       Device("bare", full, cpu_share=0.25),
                       Device("pi", derived),
                       Device("fast", quarter, speed=2.0, cpu_share=0.25),
                       Device("free", quarter),
                       Device("whole", full)), host="ok")

    lines = emulation_mismatches(cluster)

    named = [line.split()[2] for line in lines]  # "warning: device NAME ..."
    assert named == ["half", "fast"]
    assert "--emu-cpu-share 0.5" in lines[0]


def test_a_device_running_other_torch_threads_than_profiled_is_named():
    quarter = load_profile("emu-q")  # measured with one thread
    cluster = Cluster((Device("one", quarter, cpu_share=0.25),
                       Device("two", quarter, cpu_share=0.25),
                       Device("four", quarter, cpu_share=4.0)), host="one")

    lines = [line for line in emulation_mismatches(cluster, {"one": 1, "two": 2, "four": 4})
             if "thread" in line]  # "four" is also named for its share

    assert [line.split()[2] for line in lines] == ["two", "four"]
    assert "--threads 2" in lines[0] and "--threads 4" in lines[1]


def test_calibration_leaves_dilated_devices_alone():
    from halp.validate import calibrated_cluster, dilated_devices

    full = load_profile("this-machine")
    cluster = Cluster((Device("a", full), Device("b", full)), host="a")
    probes = {"this-machine": {"slowdown": {"x": 2.0}}}
    meta = {"cpu": {"cpu_model": "dilate", "devices": {"a": {"core": 0}, "b": {"core": None}}}}

    calibrated, _ = calibrated_cluster(cluster, probes, probes, dilated_devices(meta))

    assert {d.name: d.speed for d in calibrated.devices} == {"a": 1.0, "b": 0.5}


def test_calibration_slows_each_device_by_its_profiles_slowdown_over_the_run():
    from halp.validate import calibrated_cluster

    quarter, full = load_profile("emu-q"), load_profile("this-machine")
    cluster = Cluster((Device("a", quarter, cpu_share=0.25), Device("b", quarter, speed=2.0),
                       Device("c", full)), host="a")
    before = {"emu-q": {"slowdown_in_quota": {"x": 2.0}}, "this-machine": {"slowdown": {}}}
    after = {"emu-q": {"slowdown_in_quota": {"x": 8.0}}, "this-machine": {"slowdown": {}}}

    calibrated, used = calibrated_cluster(cluster, before, after)

    speeds = {d.name: d.speed for d in calibrated.devices}
    assert speeds == {"a": 0.25, "b": 0.5, "c": 1.0}  # 4x slower over the run; c unprobed
    assert used["emu-q"]["factor"] == 4.0 and used["this-machine"]["factor"] is None


def test_calibrating_against_hardware_is_refused_in_one_line(tmp_path, capsys):
    from halp.cli import main

    path = tmp_path / "s.yaml"
    path.write_text(EMU_SCENARIO)

    code = main(["validate", str(path), "--against", "hw", "--calibrate", "--out",
                 str(tmp_path / "v")])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--calibrate" in err[0]
    assert not (tmp_path / "v").exists()
