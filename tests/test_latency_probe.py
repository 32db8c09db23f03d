"""The machine probe: whether a profile still describes the machine it is used on."""

from __future__ import annotations

import pytest
import yaml

from halp.cli import main
from halp.latency.probe import (
    LAYERS,
    check_profiles,
    describes_this_machine,
    probe_machine,
    slowdown_of,
    slowdowns,
)
from halp.latency.profile import find_profile, load_profile
from halp.scenario import load_scenario

SCENARIO = """\
name: probe-check
model: {name: mobilenet_v1, width: 0.25, resolution: 128}
devices:
  - {name: a, role: host, profile: this-machine, cpu_share: 0.5, speed: 0.05}
  - {name: b, profile: this-machine, cpu_share: 0.5}
  - {name: c, profile: this-machine, cpu_share: 0.5}
network: {kind: star, bandwidth: 50Mbps}
method: {name: halp}
"""


@pytest.fixture(scope="module")
def now():
    return probe_machine(repeats=5)


def test_probe_times_every_layer(now):
    assert set(now) == set(LAYERS)
    assert all(0 < seconds < 1.0 for seconds in now.values())


def test_a_layer_that_does_more_work_takes_longer(now):
    # The probe measures this machine, not a table: the 3x3 convolution on 64 channels does
    # 16x the arithmetic of the depthwise one on 256 (the same map size).
    assert now["conv3x3"] > now["dwconv3x3"]


def test_a_profile_from_a_faster_machine_is_told_apart(now):
    faster = {"kind": "measured", "probe": {k: v / 1.6 for k, v in now.items()}}
    same = {"kind": "measured", "probe": dict(now)}

    fits, ratios = describes_this_machine(faster, now)

    assert fits is False
    assert ratios == pytest.approx(dict.fromkeys(now, 1.6))
    assert describes_this_machine(same, now) == (True, dict.fromkeys(now, 1.0))


def test_one_drifted_layer_kind_is_enough_to_tell_a_profile_apart(now):
    drifted = dict(now, linear=now["linear"] * 0.7)  # the classifier ran faster there

    fits, ratios = describes_this_machine({"kind": "measured", "probe": drifted}, now)

    assert fits is False and ratios["linear"] == pytest.approx(1 / 0.7)
    assert all(r == pytest.approx(1.0) for k, r in ratios.items() if k != "linear")


@pytest.mark.parametrize("provenance", [
    {"kind": "measured"},  # measured before profiles held a probe
    {"kind": "derived", "probe": {"conv3x3": 1e-3}},  # scaled for a device that is not here
    {"kind": "measured", "probe": {"another_layer": 1e-3}},  # nothing in common
])
def test_without_a_comparable_probe_it_cannot_tell(provenance, now):
    assert describes_this_machine(provenance, now) == (None, {})


def test_slowdowns_compare_only_what_both_have():
    assert slowdowns({"a": 1.0, "b": 2.0}, {"b": 3.0, "c": 1.0}) == {"b": 1.5}


def test_profiles_of_a_scenario_are_checked_with_a_line_for_each_that_does_not_fit(tmp_path):
    # Prepare: this machine's profile as if it had been measured where layers ran 1.6x faster,
    # and one measured before profiles held a probe.
    data = yaml.safe_load(find_profile("this-machine").read_text())
    data["provenance"].pop("probe", None)
    data["name"] = "unprobed"
    (tmp_path / "unprobed.yaml").write_text(yaml.safe_dump(data))
    data["provenance"]["probe"] = {k: v / 1.6 for k, v in probe_machine(repeats=5).items()}
    data["name"] = "faster"
    (tmp_path / "faster.yaml").write_text(yaml.safe_dump(data))
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.replace("profile: this-machine, cpu_share: 0.5, speed",
                                     "profile: faster.yaml, cpu_share: 0.5, speed")
                    .replace("profile: this-machine", "profile: unprobed.yaml"))

    checks, lines = check_profiles(d.profile for d in load_scenario(path).cluster().devices)

    assert checks["faster"]["describes_this_machine"] is False
    assert set(checks["faster"]["slowdown"]) == set(data["provenance"]["probe"])
    assert checks["unprobed"] == {"describes_this_machine": None, "slowdown": {}}
    assert len(lines) == 2  # one line each, naming the profile and how to measure it again
    assert "faster" in lines[0] and data["provenance"]["command"] in lines[0]
    assert "unprobed" in lines[1]


def test_inside_a_quota_the_probe_is_timed_as_a_quota_profile_times_its_ops():
    # Timed by CPU over the share, a layer this process runs unthrottled takes about twice as
    # long "at half a core" as its full-speed minimum: the clock, not the machine, differs.
    # Measured alternately with the full-speed probe: this VM's speed drifts within seconds.
    rounds = [slowdowns(probe_machine(repeats=5), probe_machine(repeats=5, cpu_share=0.5))
              for _ in range(3)]
    ratios = {name: sorted(r[name] for r in rounds)[1] for name in LAYERS}

    assert all(set(r) == set(LAYERS) for r in rounds)
    # 2 or a little more (a mean against a minimum); a wall clock would give about 1.
    assert all(1.5 < r < 4.0 for r in ratios.values()), rounds


def quota_profile(tmp_path, name: str, quota_probe: dict[str, float] | None,
                  probe: dict[str, float] | None = None):
    """this-machine's profile, as if it had been measured inside a half-core quota."""
    data = yaml.safe_load(find_profile("this-machine").read_text())
    data["name"] = name
    data["provenance"].update(cpu_share=0.5, cfs_period_us=10_000,
                              probe=probe or probe_machine(repeats=5))
    data["provenance"].pop("quota_probe", None)
    if quota_probe is not None:
        data["provenance"]["quota_probe"] = quota_probe
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_profile(str(path))


def test_a_quota_profile_is_checked_inside_its_quota_too(tmp_path):
    # Prepare: the same machine at full speed, but inside the quota the layers took half the
    # time where one profile was measured; another was measured before quota probes existed.
    # The probe inside the quota is taken for real (here: CPU time over the share, unthrottled).
    asked = []

    def probe_in_quota(share: float, threads: int) -> dict[str, float]:
        asked.append((share, threads))
        return probe_machine(repeats=5, threads=threads, cpu_share=share)

    inside = probe_in_quota(0.5, 1)
    faster = quota_profile(tmp_path, "faster-in-quota", {k: v / 2 for k, v in inside.items()})
    unprobed = quota_profile(tmp_path, "unprobed-in-quota", None)

    checks, lines = check_profiles([faster, unprobed, faster], probe_in_quota=probe_in_quota)

    assert asked == [(0.5, 1), (0.5, 1)]  # once for the test's reference, once for the check
    assert checks["faster-in-quota"]["describes_this_machine"] is False
    assert all(r > 1.5 for r in checks["faster-in-quota"]["slowdown_in_quota"].values())
    assert checks["unprobed-in-quota"]["describes_this_machine"] is None
    assert len(lines) == 2
    assert "faster-in-quota" in lines[0] and "quota" in lines[0]
    assert "unprobed-in-quota" in lines[1]


def test_inside_a_quota_the_quota_probe_decides(tmp_path):
    # An emulated device runs at the quota's speed: a full-speed probe that drifted (3x here:
    # far beyond the 25% tolerance, and beyond this VM's own drift between two probes) is
    # reported, but the profile still describes the device if its quota probe fits.
    now = probe_machine(repeats=5)
    inside = probe_machine(repeats=5, cpu_share=0.5)
    profile = quota_profile(tmp_path, "drifted-at-full-speed", dict(inside),
                            probe={k: v / 3.0 for k, v in now.items()})

    checks, lines = check_profiles([profile], probe_in_quota=lambda share, threads:
                                   probe_machine(repeats=5, threads=threads, cpu_share=share))

    check = checks["drifted-at-full-speed"]
    assert all(r > 1.25 for r in check["slowdown"].values())
    assert check["describes_this_machine"] is True and lines == []


def test_without_a_way_to_probe_inside_a_quota_only_full_speed_is_checked(tmp_path):
    profile = quota_profile(tmp_path, "quota", {k: 1.0 for k in LAYERS})

    checks, _ = check_profiles([profile])

    assert "slowdown_in_quota" not in checks["quota"]


@pytest.mark.parametrize("argv, reason", [
    (["--threads", "0"], "--threads must be at least 1"),
    (["--emu-cpu-share", "1.5"], "--emu-cpu-share 1.5: give a share of one core"),
    (["--emu-cpu-share", "0.25", "--threads", "2"], "use --threads 1"),
])
def test_halp_probe_refuses_what_it_cannot_measure(argv, reason, capsys):
    assert main(["probe", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and reason in err


def test_a_derived_profile_is_named_as_describing_no_machine_here():
    # rpi4 is scaled from this machine's profile for a device that is not here: re-running
    # the command that derived it would not make it describe this machine.
    checks, lines = check_profiles([load_profile("rpi4")])

    assert checks["rpi4"]["describes_this_machine"] is None
    assert len(lines) == 1 and "derived" in lines[0] and "--derive-from" not in lines[0]


def test_one_slowdown_per_profile_is_the_median_inside_its_quota_when_it_has_one():
    quota = {"slowdown": {"a": 0.5, "b": 0.5, "c": 0.5},
             "slowdown_in_quota": {"a": 1.1, "b": 1.3, "c": 3.0}}

    assert slowdown_of(quota) == 1.3  # the device is the quota; the median ignores one outlier
    assert slowdown_of({"slowdown": {"a": 0.8, "b": 0.9}}) == pytest.approx(0.85)
    assert slowdown_of({"describes_this_machine": None, "slowdown": {}}) is None
