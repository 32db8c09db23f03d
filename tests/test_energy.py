"""Energy per request from a trace and the devices' power models (halp.energy), by hand on
small traces; and power models in profiles, refused in one line when malformed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from halp.energy import (
    MEASURED,
    SIMULATED,
    DevicePower,
    energy_report,
    powers_of,
    request_energy,
    shared_windows,
)
from halp.errors import HalpError
from halp.experiment import execute
from halp.latency.profile import load_profile, profile_from_dict
from halp.scenario import load_scenario
from halp.trace import OpRecord, RequestRecord, Trace, read_trace_dir

REPO = Path(__file__).resolve().parents[1]
A = DevicePower(idle_w=2.0, compute_w=1.0, send_w=0.5, receive_w=0.25)
B = DevicePower(idle_w=1.0, compute_w=2.0, send_w=0.1, receive_w=0.2)


def one_request(arrival: float = 0.0, request: int = 0, network: str = "star") -> Trace:
    """a computes, sends to b, b computes and sends back, a gathers: 10 s from arrival."""
    t = arrival
    link = (lambda s, d: "channel") if network == "shared" else (lambda s, d: f"{s}->{d}")
    ops = [OpRecord(request, "in", "input", "a", "a", t, t),
           OpRecord(request, "c1", "compute", "a", "a", t + 0, t + 4),
           OpRecord(request, "t2", "transfer", link("a", "b"), "a", t + 1, t + 3, 100, peer="b"),
           OpRecord(request, "c3", "compute", "b", "b", t + 3, t + 7),
           OpRecord(request, "t4", "transfer", link("b", "a"), "b", t + 7, t + 8, 50, peer="a"),
           OpRecord(request, "g5", "gather", "a", "a", t + 8, t + 10)]
    return Trace("sim", "hand", ops, [RequestRecord(request, t, t + 10, "hand", "m")])


def test_a_request_costs_what_the_model_says_by_hand():
    energy = request_energy(one_request(), {"a": A, "b": B})[0]
    # a: idle 2 W x 10 s, computing 4 + 2 s x 1 W, sending 2 s x 0.5 W, receiving 1 s x 0.25 W
    assert energy["a"].joules == pytest.approx(20 + 6 + 1 + 0.25)
    assert (energy["a"].busy_s, energy["a"].sending_s, energy["a"].receiving_s) == (6, 2, 1)
    # b: idle 1 W x 10 s, computing 4 s x 2 W, sending 1 s x 0.1 W, receiving 2 s x 0.2 W
    assert energy["b"].joules == pytest.approx(10 + 8 + 0.1 + 0.4)


def test_energy_adds_up_over_devices_and_requests():
    trace = one_request()
    second = one_request(arrival=20.0, request=1)
    trace.ops += second.ops
    trace.requests += second.requests
    report = energy_report(trace, {"a": A, "b": B}, measured=False)
    assert report["mean_j"] == pytest.approx(27.25 + 18.5)
    assert report["mean_per_device_j"] == pytest.approx({"a": 27.25, "b": 18.5})
    assert report["total_j"] == pytest.approx(2 * (27.25 + 18.5))
    assert report["source"] == SIMULATED
    assert energy_report(trace, {"a": A, "b": B}, measured=True)["source"] == MEASURED


def test_a_shared_channel_finds_the_receiver_in_the_record():
    star = request_energy(one_request(), {"a": A, "b": B})
    shared = request_energy(one_request(network="shared"), {"a": A, "b": B})
    assert shared == star


def test_an_older_trace_without_peers_reads_the_receiver_from_the_link():
    trace = one_request()
    for r in trace.ops:
        r.peer = ""
    assert request_energy(trace, {"a": A, "b": B}) == request_energy(one_request(), {"a": A, "b": B})


def test_overlapping_requests_share_the_idle_power_of_their_overlap():
    first, second = RequestRecord(0, 0.0, 10.0, "m", "m"), RequestRecord(1, 5.0, 15.0, "m", "m")
    windows = shared_windows([first, second])
    assert windows == {0: pytest.approx(7.5), 1: pytest.approx(7.5)}  # 5 alone + 5 halved
    assert sum(windows.values()) == pytest.approx(15.0)  # the union of the spans


def test_a_device_left_idle_is_not_charged_but_reported_beside():
    trace = one_request()
    c = DevicePower(idle_w=3.0, compute_w=1.0, send_w=0.0, receive_w=0.0)
    report = energy_report(trace, {"a": A, "b": B, "c": c}, measured=False)
    assert set(report["mean_per_device_j"]) == {"a", "b"}
    assert report["idle_bystanders_mean_j"] == pytest.approx(3.0 * 10)


def test_no_power_model_means_no_energy_and_says_so():
    report = energy_report(one_request(), {"a": A, "b": None}, measured=False)
    assert report["mean_j"] is None and report["note"] == "no power model for b"


def test_a_simulated_run_reports_the_model_applied_to_its_own_trace(tmp_path):
    """Two Raspberry Pis (the rpi4 profile's power model): the report's energy is the model
    applied to the records the run wrote, summed by hand (one peer: no overlapping sends)."""
    scenario = load_scenario(REPO / "scenarios" / "default.yaml").with_values({
        "devices": [{"name": "pi0", "role": "host", "profile": "rpi4"},
                    {"name": "pi1", "profile": "rpi4", "threads": 2}],
        "model": {"name": "mobilenet_v1", "width": 0.25, "resolution": 128},
        "workload": {"requests": 2, "arrival": "periodic", "interval": "5s"}})
    report = execute(scenario, "sim", tmp_path, figures=False, verify=False)
    trace = read_trace_dir(tmp_path)
    power = load_profile("rpi4").power
    assert power is not None
    expected = 0.0
    for request in trace.requests:
        for device, threads in (("pi0", 1), ("pi1", 2)):
            mine = [r for r in trace.ops if r.request == request.request and r.kind != "input"]
            busy = sum(r.duration for r in mine if r.kind in ("compute", "gather") and r.device == device)
            sent = sum(r.duration for r in mine if r.kind == "transfer" and r.device == device)
            got = sum(r.duration for r in mine if r.kind == "transfer" and r.peer == device)
            if busy or sent or got:
                expected += (power.idle_w * request.latency + power.busy_core_w * threads * busy
                             + power.send_w * sent + power.receive_w * got)
    assert report["energy"]["total_j"] == pytest.approx(expected)
    assert report["energy"]["source"] == SIMULATED
    assert powers_of(load_scenario(REPO / "scenarios" / "default.yaml").cluster())["pi0"] == \
        DevicePower(power.idle_w, power.busy_core_w, power.send_w, power.receive_w)


# ---- power models in profiles --------------------------------------------------------------
RPI4 = yaml.safe_load((REPO / "profiles" / "rpi4.yaml").read_text())


def put(*path_and_value):
    *keys, last, value = path_and_value

    def change(data):
        for key in keys:
            data = data[key]
        if value is DROP:
            del data[last]
        else:
            data[last] = value
    return change


DROP = object()
BAD_POWER = [
    (put("power", "idle_w", float("nan")), "power.idle_w", "finite"),
    (put("power", "idle_w", float("inf")), "power.idle_w", "finite"),
    (put("power", "busy_core_w", -0.5), "power.busy_core_w", "negative"),
    (put("power", "send_w", 1e6), "power.send_w", "1000"),
    (put("power", "receive_w", "lots"), "power.receive_w", "number"),
    (put("power", "cores", 2.5), "power.cores", "whole number"),
    (put("power", "cores", 0), "power.cores", "from 1"),
    (put("power", "idle_watts", 2.0), "power.idle_watts", "unknown key"),
    (put("power", "send_w", DROP), "power.send_w", "required"),
    (put("power", [1, 2]), "power", "mapping"),
    (put("provenance", "power", "idle_w", DROP), "provenance.power.idle_w", "where the figure comes from"),
    (put("provenance", "power", "cores", "  "), "provenance.power.cores", "where the figure comes from"),
]


@pytest.mark.parametrize("change, key, reason", BAD_POWER, ids=[b[1] + "-" + b[2] for b in BAD_POWER])
def test_a_malformed_power_section_is_refused_in_one_line(change, key, reason):
    data = copy.deepcopy(RPI4)
    change(data)
    with pytest.raises(HalpError) as info:
        profile_from_dict(data, "rpi4.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"rpi4.yaml: {key}:"), message
    assert reason in message


def test_the_rpi4_profile_has_a_sourced_power_model_and_this_machine_none():
    rpi4 = load_profile("rpi4")
    assert rpi4.power is not None and rpi4.power.cores == 4
    assert rpi4.power.compute_w(8) == pytest.approx(4 * rpi4.power.busy_core_w)
    assert "github.com/geerlingguy/sbc-reviews/issues/4" in rpi4.provenance["power"]["idle_w"]
    assert load_profile("this-machine").power is None
    again = profile_from_dict(rpi4.to_dict(), "copy.yaml")
    assert again.power == rpi4.power
