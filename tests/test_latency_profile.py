"""Profile files: every number finite and in range, or refused naming the file and the key."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from halp.errors import HalpError, ScenarioError
from halp.latency.profile import load_profile, profile_from_dict
from halp.model.trace import trace_model
from halp.model.zoo import ModelSpec, build_model
from halp.scenario import load_scenario

REPO = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((REPO / "profiles" / "emu-q.yaml").read_text())


def put(*path_and_value):
    """A change to the profile: the keys down to a value, then the value."""
    *keys, last, value = path_and_value

    def change(data):
        for key in keys:
            data = data[key]
        data[last] = value
    return change


# (change, key the message must name, a word of the reason)
C = "coefficients"
BAD = [
    (put(C, "conv", "s_per_flop", float("nan")), "coefficients.conv.s_per_flop", "finite"),
    (put(C, "conv", "s_per_flop", float("inf")), "coefficients.conv.s_per_flop", "finite"),
    (put(C, "conv", "s_per_flop", 10**400), "coefficients.conv.s_per_flop", "finite"),
    (put(C, "conv", "intercept_s", -1e-6), "coefficients.conv.intercept_s", "negative"),
    (put(C, "pool", "s_per_out_byte", 1e300), "coefficients.pool.s_per_out_byte", "60"),
    (put(C, "linear", "s_per_in_byte", "fast"), "coefficients.linear.s_per_in_byte", "number"),
    (put(C, "linear", "s_per_in_byte", "1" * 10**6), "coefficients.linear.s_per_in_byte", "number"),
    (put(C, "linear", "s_per_in_byte", True), "coefficients.linear.s_per_in_byte", "number"),
    (put(C, "linear", "s_per_in_byte", [1]), "coefficients.linear.s_per_in_byte", "number"),
    (put(C, "conv", "s_per_parsec", 1e-9), "coefficients.conv.s_per_parsec", "unknown feature"),
    (put(C, "merge", {"s_per_flop": float("nan")}), "coefficients.merge.s_per_flop", "finite"),
    (put(C, "merge", {"s_per_sum": 1e-9}), "coefficients.merge.s_per_sum", "unknown feature"),
    (put(C, "attention", {"intercept_s": 1e-3}), "coefficients.attention", "unknown layer kind"),
    (put(C, "conv", 5), "coefficients.conv", "mapping"),
    (put(C, [1, 2]), "coefficients", "mapping"),
    (put("op_overhead_s", float("nan")), "op_overhead_s", "finite"),
    (put("op_overhead_s", -1.0), "op_overhead_s", "negative"),
    (put("message_overhead_s", float("inf")), "message_overhead_s", "finite"),
    (put("message_overhead_s", 3600.0), "message_overhead_s", "60"),
    (put("copy_s_per_byte", float("-inf")), "copy_s_per_byte", "finite"),
    (put("copy_s_per_byte", ".inf"), "copy_s_per_byte", "number"),
    (put("held_out_mape", float("nan")), "held_out_mape", "finite"),
    (put("held_out_mape", -3.0), "held_out_mape", "negative"),
    (put("provenance", "cpu_share", -0.25), "provenance.cpu_share", "negative"),
    (put("provenance", "cpu_share", float("nan")), "provenance.cpu_share", "finite"),
    (put("provenance", "cpu_share", "a quarter"), "provenance.cpu_share", "number"),
    (put("provenance", "cfs_period_us", 1e12), "provenance.cfs_period_us", "1e+06"),
    (put("provenance", "threads", 10**6), "provenance.threads", "64"),
    (put("provenance", "probe", "conv3x3", float("inf")), "provenance.probe.conv3x3", "finite"),
    (put("provenance", "quota_probe", "linear", -1.0), "provenance.quota_probe.linear", "negative"),
    (put("provenance", "probe", [1, 2]), "provenance.probe", "mapping"),
    (put("provenance", [1, 2]), "provenance", "mapping"),
]


@pytest.mark.parametrize("change, key, reason", BAD, ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD)])
def test_a_bad_profile_number_names_the_file_the_key_and_the_reason(change, key, reason):
    data = copy.deepcopy(BASE)
    change(data)
    with pytest.raises(HalpError) as info:
        profile_from_dict(data, "profiles/p.yaml")
    message = str(info.value)
    assert "\n" not in message and len(message) < 300
    assert message.startswith(f"profiles/p.yaml: {key}: ")
    assert reason.lower() in message.lower()


def test_a_number_written_as_text_is_read():
    data = copy.deepcopy(BASE)
    data["coefficients"]["conv"]["s_per_flop"] = "1e-10"  # YAML reads 1e-10 as a string
    assert profile_from_dict(data, "p.yaml").coefficients["conv"]["s_per_flop"] == 1e-10


@pytest.mark.parametrize("name", ["this-machine", "rpi4", "emu-q"])
def test_every_shipped_profile_loads(name):
    assert load_profile(name).coefficients


def test_a_merge_section_is_read_and_a_profile_without_one_predicts_merges_as_elementwise():
    graph = trace_model(build_model(ModelSpec("resnet18")), (3, 224, 224), "resnet18")
    block = next(layer for layer in graph.layers if layer.nodes)
    merge = next(n.spec for n in block.nodes if n.spec.kind == "merge")
    full = graph.full(block.index + 1)
    old = profile_from_dict(copy.deepcopy(BASE), "old.yaml")
    assert "merge" not in old.coefficients
    assert old.layer_s(merge, full, full) == old.layer_s(replace(merge, kind="elementwise"), full, full) > 0

    data = copy.deepcopy(BASE)
    data["coefficients"]["merge"] = {"intercept_s": 4e-6, "s_per_out_byte": "2e-10"}
    new = profile_from_dict(data, "new.yaml")
    assert new.coefficients["merge"] == {"intercept_s": 4e-6, "s_per_out_byte": 2e-10}
    assert new.layer_s(merge, full, full) == pytest.approx(4e-6 + 2e-10 * 4 * 64 * 56 * 56)


def test_a_scenario_whose_profile_has_a_nan_names_the_device_the_file_and_the_key(tmp_path):
    data = copy.deepcopy(BASE)
    data["coefficients"]["dwconv"]["s_per_flop"] = float("nan")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "s.yaml").write_text(
        "name: t\nmodel: {name: mobilenet_v1}\n"
        "devices: [{name: a, role: host, profile: this-machine}, {name: b, profile: bad.yaml}]\n"
        "network: {bandwidth: 10Mbps}\nmethod: {name: halp}\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(tmp_path / "s.yaml")
    message = str(info.value)
    assert f"devices.1.profile: {tmp_path / 'bad.yaml'}: coefficients.dwconv.s_per_flop:" in message
    assert "finite" in message
