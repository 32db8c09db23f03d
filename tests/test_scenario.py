"""Scenario loading: good files load, bad files fail with one line naming file, field, reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_scenario

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
    ("model: {name: mobilenet_v1, width: 0.5, resolution: 160}", "model: {name: resnet51}", "model.name", "unknown model"),
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


# ---- numbers: finite and in a stated range, or refused naming the field and the bound ----------
HALP = "method: {name: halp}"
WORKLOAD = "workload: {requests: 5, arrival: periodic, interval: 500ms, deadline: 1s}"
LINKS = "links: {c: 40Mbps}"
MODEL = "model: {name: mobilenet_v1, width: 0.5, resolution: 160}"
GM = "links: {{c: {{gauss_markov: {{mean: 40Mbps, sigma: 10Mbps, {}}}}}}}"
GE = "links: {{c: {{gilbert_elliott: {{good: 40Mbps, bad: 4Mbps, p_good_bad: 0.1, " \
     "p_bad_good: 0.2, {}}}}}}}"
CUSTOM_SHAPE = "model: {{name: custom, factory: 'net.py:build', input_shape: {}}}"
POISSON = "workload: {{requests: 5, arrival: poisson, rate: {}}}"


def with_section(section: str) -> tuple[str, str]:
    return HALP, f"{HALP}\n{section}"


# (replacement applied to GOOD, field the message must name, a word of the reason)
NUMBERS = [
    # devices
    ("speed: 2.0", "speed: .inf", "devices.1.speed", "finite"),
    ("speed: 2.0", "speed: .nan", "devices.1.speed", "finite"),
    ("speed: 2.0", "speed: 1001", "devices.1.speed", "1000"),
    ("cpu_share: 0.5", "cpu_share: .nan", "devices.2.cpu_share", "finite"),
    ("cpu_share: 0.5", "cpu_share: 65", "devices.2.cpu_share", "64"),
    ("speed: 2.0", "threads: 100", "devices.1.threads", "64"),
    ("speed: 2.0", "port: 70000", "devices.1.port", "65535"),
    # seed
    ("seed: 3", "seed: -1", "seed", "greater than or equal to 0"),
    ("seed: 3", "seed: 4294967296", "seed", "4294967295"),
    ("seed: 3", "seed: 99999999999999999999999999999", "seed", "4294967295"),
    ("seed: 3", "seed: .inf", "seed", "finite"),
    # network
    ("bandwidth: 100Mbps", "bandwidth: 1e400Mbps", "network.bandwidth", "finite"),
    ("bandwidth: 100Mbps", "bandwidth: 2000Gbps", "network.bandwidth", "1000Gbps"),
    ("bandwidth: 100Mbps", "bandwidth: 0.5bps", "network.bandwidth", "from 1bps"),
    ("bandwidth: 100Mbps", "bandwidth: " + "1" * 100 + "Mbps", "network.bandwidth", "too long"),
    ("bandwidth: 100Mbps", "bandwidth: 100Mbps, delay: 61s", "network.delay", "60s"),
    ("bandwidth: 100Mbps", "bandwidth: 100Mbps, jitter: 1e400s", "network.jitter", "finite"),
    ("bandwidth: 100Mbps", "bandwidth: 100Mbps, jitter: 2min", "network.jitter", "60s"),
    ("bandwidth: 100Mbps", "bandwidth: 100Mbps, loss: .nan", "network.loss", "finite"),
    (LINKS, "links: {c: 1e400Mbps}", "network.links.c", "finite"),
    (LINKS, "links: {c: 1e13bps}", "network.links.c", "1000Gbps"),
    # generated links
    (LINKS, GM.format("step: 0s"), "network.links.c.gauss_markov.step", "1ms"),
    (LINKS, GM.format("step: 1us"), "network.links.c.gauss_markov.step", "1ms"),
    (LINKS, GM.format("step: 1ms, duration: 2000s"), "network.links.c.gauss_markov",
     "at most 1000000"),
    (LINKS, GM.format("duration: 0s"), "network.links.c.gauss_markov.duration", "positive"),
    (LINKS, GM.format("duration: 1e400s"), "network.links.c.gauss_markov.duration", "finite"),
    (LINKS, GM.format("alpha: .nan"), "network.links.c.gauss_markov.alpha", "finite"),
    (LINKS, GM.format("floor: 1e400bps"), "network.links.c.gauss_markov.floor", "finite"),
    (LINKS, GE.format("step: 0s"), "network.links.c.gilbert_elliott.step", "1ms"),
    (LINKS, GE.format("step: 1ms, duration: 10000s"), "network.links.c.gilbert_elliott", "steps"),
    (LINKS, GE.format("duration: 2000000s"), "network.links.c.gilbert_elliott.duration",
     "1000000s"),
    (LINKS, GE.format("step: 1s").replace("0.1", ".nan"),
     "network.links.c.gilbert_elliott.p_good_bad", "finite"),
    # workload
    ("interval: 500ms", "interval: 0s", "workload.interval", "positive"),
    ("interval: 500ms", "interval: 1e400s", "workload.interval", "finite"),
    ("interval: 500ms", "interval: 2000000s", "workload.interval", "1000000s"),
    ("deadline: 1s", "deadline: 2000000s", "workload.deadline", "1000000s"),
    ("requests: 5", "requests: 100001", "workload.requests", "100000"),
    ("requests: 5", "requests: 10000000", "workload.requests", "100000"),
    (WORKLOAD, POISSON.format(".inf"), "workload.rate", "finite"),
    (WORKLOAD, POISSON.format("10001"), "workload.rate", "10000"),
    (WORKLOAD, POISSON.format("0"), "workload.rate", "greater than 0"),
    # model
    (MODEL, CUSTOM_SHAPE.format("[3, 100000, 100000]"), "model.input_shape.1", "4096"),
    (MODEL, CUSTOM_SHAPE.format("[5000, 16, 16]"), "model.input_shape.0", "4096"),
    (MODEL, CUSTOM_SHAPE.format("[0, 16, 16]"), "model.input_shape.0", "or equal to 1"),
    (MODEL, CUSTOM_SHAPE.format("[3, 16, -16]"), "model.input_shape.2", "or equal to 1"),
    ("width: 0.5", "width: .nan", "model.width", "finite"),
    ("resolution: 160", "resolution: 100000", "model.resolution", "4096"),
    # methods
    (HALP, "method: {name: halp, cuts: [1, 100000]}", "method.cuts.1", "10000"),
    (HALP, "method: {name: halp, cuts: [-1]}", "method.cuts.0", "greater than or equal to 0"),
    (HALP, "method: {name: equal, max_layers_per_segment: 99999999}",
     "method.max_layers_per_segment", "10000"),
    (HALP, "method: {name: deepthings, fused_layers: 99999999}", "method.fused_layers", "10000"),
    (HALP, "method: {name: offload, cut: -1}", "method.cut", "greater than or equal to 0"),
    (HALP, "method: {name: offload, cut: 99999999}", "method.cut", "10000"),
    (HALP, "method: {name: select, horizon: 0s}", "method.horizon", "positive"),
    (HALP, "method: {name: select, horizon: 1e400s}", "method.horizon", "finite"),
    (HALP, "method: {name: select, bucket: .inf}", "method.bucket", "finite"),
    (HALP, "method: {name: select, window: 100000}", "method.window", "1000"),
    # dynamics
    with_section("dynamics: {interval: 0s}") + ("dynamics.interval", "positive"),
    with_section("dynamics: {interval: 1e400s}") + ("dynamics.interval", "finite"),
    with_section("dynamics: {devices: {b: {random_walk: {sigma: .nan}}}}")
    + ("dynamics.devices.b.random_walk.sigma", "finite"),
    with_section("dynamics: {devices: {b: {random_walk: {sigma: 0.1, min: 3, max: 2}}}}")
    + ("dynamics.devices.b.random_walk", "above max"),
    with_section("dynamics: {devices: {b: {random_walk: {sigma: 0.1, max: 5000}}}}")
    + ("dynamics.devices.b.random_walk.max", "1000"),
    with_section("dynamics: {devices: {b: {steps: [{at: 1s, speed: 0}]}}}")
    + ("dynamics.devices.b.steps.0.speed", "greater than 0"),
    with_section("dynamics: {devices: {b: {steps: [{at: 1e400s, speed: 2}]}}}")
    + ("dynamics.devices.b.steps.0.at", "finite"),
    with_section("dynamics: {devices: {b: {background_load: [{at: 10s, until: 5s, share: 0.5}]}}}")
    + ("dynamics.devices.b.background_load.0", "not after"),
    with_section("dynamics: {devices: {b: {background_load: [{at: 1s, share: 1.5}]}}}")
    + ("dynamics.devices.b.background_load.0.share", "less than 1"),
    with_section("dynamics: {links: {c: {random_walk: {sigma: 2000Gbps}}}}")
    + ("dynamics.links.c.random_walk.sigma", "1000Gbps"),
    with_section("dynamics: {links: {c: {random_walk: {sigma: 1Mbps, min: 1Gbps, max: 1Mbps}}}}")
    + ("dynamics.links.c.random_walk", "above max"),
    with_section("dynamics: {links: {c: {steps: [{at: 1s, bandwidth: 0bps}]}}}")
    + ("dynamics.links.c.steps.0.bandwidth", "positive"),
    with_section("dynamics: {links: {c: {steps: ["
                 + ", ".join(["{at: 1s, bandwidth: 1Mbps}"] * 10_001) + "]}}}")
    + ("dynamics.links.c.steps", "at most 10000"),
    # learning
    with_section("learning: {generations: 10000000}") + ("learning.generations", "100000"),
    with_section("learning: {population: 1001}") + ("learning.population", "1000"),
    with_section("learning: {tournament: 100000}") + ("learning.tournament", "1000"),
    with_section("learning: {mutation_sigma: .nan}") + ("learning.mutation_sigma", "finite"),
    with_section("learning: {mutation_sigma: 100}") + ("learning.mutation_sigma", "10"),
    with_section("learning: {sync_every: 0}") + ("learning.sync_every", "or equal to 1"),
    with_section("learning: {episode_steps: 1000000}") + ("learning.episode_steps", "10000"),
    with_section("learning: {batch: 10000000}") + ("learning.batch", "65536"),
    with_section("learning: {hidden: 100000}") + ("learning.hidden", "4096"),
    with_section("learning: {learner_steps: 10000000}") + ("learning.learner_steps", "100000"),
    with_section("learning: {jobs: 100000}") + ("learning.jobs", "1024"),
    # backends
    with_section("backends: {emu: {timeout: 0s}}") + ("backends.emu.timeout", "positive"),
    with_section("backends: {emu: {timeout: 2000000s}}") + ("backends.emu.timeout", "1000000s"),
    with_section("backends: {emu: {warmup_requests: 5000}}")
    + ("backends.emu.warmup_requests", "1000"),
    with_section("backends: {emu: {cfs_period_us: .inf}}")
    + ("backends.emu.cfs_period_us", "finite"),
    with_section("backends: {hw: {timeout: 1e400s}}") + ("backends.hw.timeout", "finite"),
    with_section("backends: {hw: {warmup_requests: -1}}")
    + ("backends.hw.warmup_requests", "or equal to 0"),
]


@pytest.mark.parametrize("old,new,field,reason", NUMBERS,
                         ids=[f"{i}-{n[1][:40]}" for i, n in enumerate(NUMBERS)])
def test_a_number_out_of_its_range_names_the_field_and_the_bound(tmp_path, old, new, field, reason):
    assert old in GOOD
    (tmp_path / "net.py").write_text(NET)
    with pytest.raises(ScenarioError) as info:
        load_text(tmp_path, GOOD.replace(old, new, 1))
    message = str(info.value)
    assert "\n" not in message and len(message) < 400
    assert f"scenario.yaml: {field}:" in message
    assert reason.lower() in message.lower()


@pytest.mark.parametrize("change, field, reason", [
    ({"network.bandwidth": float("inf")}, "network.bandwidth", "finite"),
    ({"network.bandwidth": 10**400}, "network.bandwidth", "finite"),
    ({"network.bandwidth": 1e13}, "network.bandwidth", "1000Gbps"),
    ({"network.delay": 100.0}, "network.delay", "60s"),
    ({"workload.interval": float("nan")}, "workload.interval", "finite"),
    ({"workload.interval": 0.0}, "workload.interval", "positive"),
    ({"workload.requests": 10**7}, "workload.requests", "100000"),
    ({"devices.b.speed": float("inf")}, "devices.1.speed", "finite"),
    ({"seed": 2**40}, "seed", "4294967295"),
])
def test_overrides_in_base_units_are_held_to_the_same_ranges(tmp_path, change, field, reason):
    s = load_text(tmp_path, GOOD)
    with pytest.raises(ScenarioError) as info:
        s.with_values(change)
    assert f"{field}:" in str(info.value) and reason in str(info.value)


AT_THE_LIMITS = [
    ("seed: 3", "seed: 4294967295"),
    ("requests: 5", "requests: 100000"),
    ("deadline: 1s", "deadline: 0s"),  # none meets it: select serves its fastest variant
    ("interval: 500ms", "interval: 1000000s"),
    ("bandwidth: 100Mbps", "bandwidth: 1000Gbps, delay: 60s, jitter: 1min"),
    (LINKS, "links: {c: 1bps}"),
    (LINKS, GM.format("step: 1ms, duration: 1000s")),  # exactly a million steps
    (LINKS, GE.format("step: 1000000s, duration: 1000000s")),
    ("speed: 2.0", "speed: 1000"),
    (MODEL, CUSTOM_SHAPE.format("[4096, 4096, 4096]")),
    (WORKLOAD, POISSON.format("10000")),
    (HALP, "method: {name: select, variants: ['1.0_224'], horizon: 1000000s, window: 1000}"),
    with_section("learning: {generations: 100000, population: 1000, hidden: 4096, batch: 65536, "
                 "jobs: 1024, episode_steps: 10000, learner_steps: 100000, mutation_sigma: 10}"),
    with_section("backends: {emu: {timeout: 1000000s, warmup_requests: 1000}}"),
]


@pytest.mark.parametrize("old,new", AT_THE_LIMITS, ids=[n[:40] for _, n in AT_THE_LIMITS])
def test_values_at_the_limits_are_admitted(tmp_path, old, new):
    (tmp_path / "net.py").write_text(NET)
    load_text(tmp_path, GOOD.replace(old, new, 1))


def test_a_million_steps_of_generated_link_are_drawn(tmp_path):
    s = load_text(tmp_path, GOOD.replace(LINKS, GM.format("step: 1ms, duration: 1000s")))
    assert len(s.link_trace("c").times) > 1000


def test_every_scenario_shipped_loads_within_the_limits_and_loads_back_as_run(tmp_path):
    for path in sorted((Path(__file__).parents[1] / "scenarios").glob("*.yaml")):
        s = load_scenario(path)
        again = tmp_path / f"{path.stem}.yaml"
        again.write_text(s.to_yaml())
        assert load_scenario(again).to_yaml() == s.to_yaml(), path.name


def test_a_background_load_without_an_end_lasts_and_survives_the_round_trip(tmp_path):
    s = load_text(tmp_path, GOOD.replace(HALP, HALP + "\ndynamics: {devices: {b: "
                                         "{background_load: [{at: 2s, share: 0.5}]}}}"))
    assert s.dynamics is not None
    assert s.dynamics.devices["b"].background_load[0].until is None
    (tmp_path / "again.yaml").write_text(s.to_yaml())
    assert load_scenario(tmp_path / "again.yaml").dynamics == s.dynamics
    assert s.with_values({"seed": 4}).dynamics == s.dynamics


def test_a_huge_name_in_a_refusal_is_cut_short(tmp_path):
    name = "z" * 1000  # YAML's longest key
    with pytest.raises(ScenarioError, match="unknown device") as info:
        load_text(tmp_path, GOOD.replace(LINKS, f"links: {{{name}: 40Mbps}}"))
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("field, value", [
    ("devices.a.speed", True), ("devices.a.threads", False), ("workload.requests", True),
    ("seed", True), ("learning.population", True), ("network.loss", False),
])
def test_a_boolean_given_for_a_number_is_refused_naming_the_field(tmp_path, field, value):
    path = write_scenario(tmp_path, """\
name: booleans
model: {name: vgg16}
devices: [{name: a, role: host, profile: rpi4}]
network: {bandwidth: 1Mbps}
method: {name: standalone}
""")
    with pytest.raises(ScenarioError, match="a number, not") as err:
        load_scenario(path).with_values({field: value})
    assert field.rpartition(".")[2] in str(err.value)
