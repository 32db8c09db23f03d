"""Scenario loading: good files load, bad files fail with one line naming file, field, reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from halp.errors import ScenarioError
from halp.scenario import load_scenario

GOOD = """\
name: t
seed: 3
model: {name: mobilenet_v1, width: 0.5, resolution: 160}
devices:
  - {name: a, role: host, profile: this-machine}
  - {name: b, profile: this-machine, speed: 2.0}
  - {name: c, profile: this-machine, cpu_share: 0.5}
network: {kind: star, bandwidth: 100Mbps, links: {c: 40Mbps}}
method: {name: halp}
workload: {requests: 5, arrival: periodic, interval: 500ms, deadline: 1s}
"""

# (replacement applied to GOOD, field the message must name, a word of the reason)
BAD = [
    ("model: {name: mobilenet_v1, width: 0.5, resolution: 160}", "model: {name: resnet50}", "model.name", "unknown model"),
    ("width: 0.5", "width: 0.6", "model", "width"),
    ("resolution: 160", "resolution: 150", "model", "resolution"),
    ("bandwidth: 100Mbps", "bandwidth: -100Mbps", "network.bandwidth", "positive"),
    ("bandwidth: 100Mbps", "bandwidth: 100", "network.bandwidth", "unit"),
    ("bandwidth: 100Mbps", "bandwidth: 100 parsecs", "network.bandwidth", "unit"),
    ("{name: b, profile: this-machine, speed: 2.0}", "{name: b, role: host, profile: this-machine}", "devices", "one device must have role: host"),
    ("{name: a, role: host, profile: this-machine}", "{name: a, profile: this-machine}", "devices", "one device must have role: host"),
    ("profile: this-machine, speed: 2.0", "profile: no-such-device", "devices.1.profile", "unknown profile"),
    ("method: {name: halp}", "method: {name: magic}", "method", "unknown method"),
    ("method: {name: halp}", "method: {nmae: halp}", "method", "needs name"),
    ("seed: 3", "sede: 3", "sede", "unknown key"),
    ("kind: star", "knd: star", "network.knd", "did you mean kind?"),
    ("method: {name: halp}", "method: {name: halp, cutz: [1]}", "method.cutz", "did you mean cuts?"),
    ("seed: 3", "yes: 3", "key True", "quote it"),
    ("name: t", "name: ../t", "name", "not a safe name"),
    ("speed: 2.0", "speed: -1", "devices.1.speed", "greater than 0"),
    ("cpu_share: 0.5", "cpu_share: 0", "devices.2.cpu_share", "greater than 0"),
    ("interval: 500ms", "interval: 500", "workload.interval", "unit"),
    ("arrival: periodic, interval: 500ms,", "arrival: periodic,", "workload", "interval"),
    ("arrival: periodic", "arrival: bursty", "workload.arrival", "periodic"),
    ("requests: 5", "requests: 0", "workload.requests", "greater than or equal to 1"),
    ("links: {c: 40Mbps}", "links: {z: 40Mbps}", "network.links", "unknown device"),
    ("links: {c: 40Mbps}", "links: {a: 40Mbps}", "network.links", "host"),
    ("links: {c: 40Mbps}", "links: {c: {trace: missing.csv}}", "network.links.c.trace", "no such file"),
    ("kind: star", "kind: mesh", "network.kind", "star"),
    ("{name: c, profile: this-machine, cpu_share: 0.5}", "{name: b, profile: this-machine}", "devices", "unique"),
    ("method: {name: halp}", "method: {name: deepthings, grid: [0, 3]}", "method", "grid"),
    ("method: {name: halp}", "method: {name: offload, device: a}", "method.device", "not a secondary"),
    ("deadline: 1s", "deadline: soon", "workload.deadline", "duration"),
    ("model: {name: mobilenet_v1, width: 0.5, resolution: 160}", "model: {name: vgg16, width: 0.5}", "model", "width"),
    (GOOD[GOOD.index("devices:"):GOOD.index("network:")], "devices: []\n", "devices", "at least 1"),
    ("name: t", "name: [t", "line 2", "not valid YAML"),
    ("model: {name: mobilenet_v1, width: 0.5, resolution: 160}", "model: {name: mobilenet_v1, weights: nope.pt}", "model.weights", "no such file"),
]


def load_text(tmp_path: Path, text: str):
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    return load_scenario(path)


def test_a_good_scenario_loads_its_host_links_speeds_and_interval(tmp_path):
    s = load_text(tmp_path, GOOD)
    assert s.host == "a"
    cluster = s.cluster()
    assert cluster.bandwidth_bps == {"b": 100e6, "c": 40e6}
    assert cluster.device("b").speed == 2.0
    assert s.workload.interval == pytest.approx(0.5)


@pytest.mark.parametrize("old,new,field,reason", BAD, ids=[f"{i}-{b[1][:30]}" for i, b in enumerate(BAD)])
def test_bad_scenario_names_file_field_and_reason(tmp_path, old, new, field, reason):
    assert old in GOOD
    with pytest.raises(ScenarioError) as info:
        load_text(tmp_path, GOOD.replace(old, new, 1))
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "scenario.yaml") in message
    assert field in message
    assert reason.lower() in message.lower()


def test_a_scenario_that_is_not_a_mapping_is_refused(tmp_path):
    with pytest.raises(ScenarioError, match="mapping"):
        load_text(tmp_path, "- just\n- a list\n")


def test_a_missing_scenario_file_is_refused(tmp_path):
    with pytest.raises(ScenarioError, match="no such"):
        load_scenario(tmp_path / "absent.yaml")


def test_halp_plan_on_a_bad_scenario_exits_2_with_one_line_naming_the_field(tmp_path):
    path = tmp_path / "scenario.yaml"
    path.write_text(GOOD.replace("bandwidth: 100Mbps", "bandwidth: -1Mbps"))
    result = subprocess.run([sys.executable, "-m", "halp.cli", "plan", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "network.bandwidth" in result.stderr


def test_scenario_as_run_loads_back(tmp_path):
    s = load_text(tmp_path, GOOD)
    again = tmp_path / "again.yaml"
    again.write_text(s.to_yaml())
    t = load_scenario(again)
    ignore = {"base_dir": True, "devices": {"__all__": {"profile"}}}
    assert t.model_dump(exclude=ignore) == s.model_dump(exclude=ignore)
    # Profiles are written as absolute files, so the scenario loads the same from anywhere.
    assert [d.profile.coefficients for d in t.cluster().devices] == \
        [d.profile.coefficients for d in s.cluster().devices]
    elsewhere = tmp_path / "run" / "scenario.yaml"
    elsewhere.parent.mkdir()
    elsewhere.write_text(s.to_yaml())
    assert load_scenario(elsewhere).cluster() == t.cluster()


CUSTOM = GOOD.replace("model: {name: mobilenet_v1, width: 0.5, resolution: 160}",
                      "model: {name: custom, factory: 'FACTORY', input_shape: [3, 16, 16]}")
NET = "from torch import nn\n\ndef build():\n    return nn.Sequential(nn.Conv2d(3, 4, 3))\n"


@pytest.mark.parametrize("factory", ["usernet:build", "usernet.py:build", "models/usernet.py:build"])
def test_a_custom_model_file_is_found_beside_the_scenario_and_travels(tmp_path, monkeypatch,
                                                                      factory):
    """A factory's module file is relative to the scenario (like weights), wherever the user
    stands, and the scenario as run names it absolutely, so a run folder loads it too."""
    where = tmp_path / "models" if factory.startswith("models/") else tmp_path
    where.mkdir(exist_ok=True)
    (where / "usernet.py").write_text(NET)
    s = load_text(tmp_path, CUSTOM.replace("FACTORY", factory))
    monkeypatch.chdir("/")
    assert s.model_spec().factory == f"{where / 'usernet.py'}:build"
    elsewhere = tmp_path / "run" / "scenario.yaml"
    elsewhere.parent.mkdir()
    elsewhere.write_text(s.to_yaml())
    assert load_scenario(elsewhere).model_spec() == s.model_spec()


def test_a_missing_custom_model_file_is_named_at_load(tmp_path):
    with pytest.raises(ScenarioError, match="model.factory: .*nope.py: no such file"):
        load_text(tmp_path, CUSTOM.replace("FACTORY", "nope.py:build"))


def test_overrides_are_revalidated(tmp_path):
    s = load_text(tmp_path, GOOD)
    t = s.with_values({"network.bandwidth": "10Mbps", "method.name": "modnn"})
    assert t.network.bandwidth == 10e6 and t.method.name == "modnn"
    with pytest.raises(ScenarioError, match="network.bandwidth"):
        s.with_values({"network.bandwidth": "-3Mbps"})
    with pytest.raises(ScenarioError, match="no field"):
        s.with_values({"network.nothing.here": 1})


def test_a_link_given_a_trace_file_follows_the_trace(tmp_path):
    (tmp_path / "bw.csv").write_text("time_s,bandwidth_bps\n0,50e6\n1.5,10e6\n")
    s = load_text(tmp_path, GOOD.replace("links: {c: 40Mbps}", "links: {c: {trace: bw.csv}}"))
    cluster = s.cluster()
    assert cluster.bandwidth_bps["c"] == 50e6
    assert cluster.traces["c"].rate_at(2.0) == 10e6


def test_unquoted_variant_is_explained(tmp_path):
    text = GOOD.replace("method: {name: halp}", "method: {name: select, variants: [0.5_160]}")
    with pytest.raises(ScenarioError, match="quote it"):
        load_text(tmp_path, text)


def test_generated_links_are_seeded_per_link(tmp_path):
    gen = "{gauss_markov: {mean: 40Mbps, sigma: 10Mbps}}"
    s = load_text(tmp_path, GOOD.replace("links: {c: 40Mbps}", f"links: {{b: {gen}, c: {gen}}}"))
    cluster = s.cluster()
    assert cluster.traces["b"] != cluster.traces["c"]
    assert load_text(tmp_path, s.to_yaml()).cluster().traces == cluster.traces
