"""Derived profiles: a measured profile scaled, work terms and fixed costs apart."""

from __future__ import annotations

import pytest

from halp.latency.derive import derive_profile
from halp.latency.profile import Profile


def test_derived_profile_scales_work_terms_and_fixed_costs_apart():
    base = Profile("base", {"conv": {"intercept_s": 1e-5, "s_per_flop": 2e-12}}, op_overhead_s=3e-6,
                   message_overhead_s=4e-5, copy_s_per_byte=1e-11, held_out_mape=5.0)

    derived = derive_profile(base, "slow", compute_scale=50.0, overhead_scale=8.0, copy_scale=15.0,
                             provenance={"assumption": "test"})

    assert derived.coefficients["conv"] == pytest.approx({"intercept_s": 8e-5, "s_per_flop": 1e-10})
    assert derived.op_overhead_s == pytest.approx(2.4e-5)
    assert derived.message_overhead_s == pytest.approx(3.2e-4)
    assert derived.copy_s_per_byte == pytest.approx(1.5e-10)
    assert derived.provenance["kind"] == "derived" and derived.provenance["from"] == "base"
    assert derived.held_out_mape is None


def test_merges_are_scaled_as_every_kind_or_said_to_fall_back_to_elementwise():
    merge = {"intercept_s": 2e-6, "s_per_out_byte": 1e-11}
    with_merge = Profile("m", {"elementwise": {"s_per_flop": 1e-10}, "merge": merge})
    without = Profile("e", {"elementwise": {"s_per_flop": 1e-10}})

    derived = derive_profile(with_merge, "slow", compute_scale=50.0, overhead_scale=8.0, copy_scale=1.0,
                             provenance={})
    assert derived.coefficients["merge"] == pytest.approx({"intercept_s": 1.6e-5, "s_per_out_byte": 5e-10})
    assert "scaled" in derived.provenance["merge"]
    derived = derive_profile(without, "slow", compute_scale=50.0, overhead_scale=8.0, copy_scale=1.0,
                             provenance={})
    assert "merge" not in derived.coefficients and "elementwise" in derived.provenance["merge"]


# Profiles derived from published stand-alone times (profiles/published/rpi4.yaml).
PUBLISHED = "profiles/published/rpi4.yaml"
PI_PROFILES = {"rpi4": 1, "rpi4-4t": 4}


def _simulated_standalone_s(profile_path, model: str, tmp_path) -> float:
    """The simulator's stand-alone latency of `model` on one device of the profile."""
    from halp.experiment import standalone_s
    from halp.scenario import load_scenario

    path = tmp_path / f"alone-{model}.yaml"
    path.write_text(f"name: alone\nmodel: {{name: {model}}}\n"
                    f"devices:\n  - {{name: d0, role: host, profile: {profile_path}}}\n"
                    "network: {kind: star, bandwidth: 100Mbps}\nmethod: {name: standalone}\n"
                    "workload: {requests: 1, arrival: single}\n")
    return standalone_s(load_scenario(path))


@pytest.mark.parametrize("name", sorted(PI_PROFILES))
def test_pi_profile_reproduces_the_published_times_it_was_fitted_to_through_the_simulator(name, tmp_path):
    from halp.latency.profile import REPO_ROOT, load_profile

    path = REPO_ROOT / "profiles" / f"{name}.yaml"
    profile = load_profile(str(path))
    fitted = profile.provenance["fitted"]
    assert {f["model"] for f in fitted} == {"vgg16", "mobilenet_v1"}
    for figure in fitted:
        simulated = _simulated_standalone_s(path, figure["model"], tmp_path)
        assert simulated == pytest.approx(figure["published_s"], rel=0.10), figure
        assert simulated == pytest.approx(figure["predicted_s"], rel=1e-3)  # provenance says it
    # held-out figures are reported with their error, not hidden
    held = profile.provenance["held_out"]
    assert {f["model"] for f in held} >= {"resnet18", "resnet50"}
    for figure in held:
        error = 100 * (figure["predicted_s"] - figure["published_s"]) / figure["published_s"]
        assert figure["error_pct"] == pytest.approx(error, abs=0.1)


@pytest.mark.parametrize("name", sorted(PI_PROFILES))
def test_pi_profile_provenance_carries_every_source_and_regenerates_from_its_command(name):
    from halp.latency.derive import derive_from_published, read_published
    from halp.latency.profile import REPO_ROOT, load_profile

    threads = PI_PROFILES[name]
    profile = load_profile(str(REPO_ROOT / "profiles" / f"{name}.yaml"))
    prov = profile.provenance
    published = read_published(str(REPO_ROOT / PUBLISHED))
    assert prov["kind"] == "derived" and prov["threads"] == threads
    assert prov["command"] == (f"halp profile --derive-from x86-base --published {PUBLISHED} "
                               f"--threads {threads} --out profiles/{name}.yaml")
    assert prov["sources"] == published["sources"] and prov["assumptions"]
    reported = prov["fitted"] + prov["held_out"]
    figures = [f for f in published["figures"] if f.threads == threads]
    assert sorted((r["source"], r["model"], r["quote"]) for r in reported) == sorted(
        (f.source, f.model, f.quote) for f in figures)
    for figure in figures:  # every quote holds the figure it gives
        assert f"{figure.seconds * 1000:.1f}" in figure.quote or f"{figure.seconds * 1000:.2f}" in figure.quote
    assert profile.power is not None and set(prov["power"]) >= {"idle_w", "busy_core_w"}

    again = derive_from_published(load_profile("x86-base"), name, published, threads=threads,
                                  provenance={})
    assert again.profile.coefficients == profile.coefficients
    assert again.profile.op_overhead_s == profile.op_overhead_s


def test_published_fit_refuses_groups_its_figures_cannot_separate():
    from halp.errors import HalpError
    from halp.latency.derive import derive_from_published, read_published
    from halp.latency.profile import REPO_ROOT, load_profile

    published = read_published(str(REPO_ROOT / PUBLISHED))
    # neither figure has a depthwise layer: nothing sets the dwconv group's scale
    entry = {"threads": 1, "groups": {"dwconv": ["dwconv"],
                                      "other": ["conv", "pool", "linear", "elementwise"]},
             "fit": ["ncnn/vgg16", "ncnn/resnet18"]}
    with pytest.raises(HalpError, match="group dwconv a scale of .*merge them"):
        derive_from_published(load_profile("this-machine"), "x", {**published, "profiles": [entry]},
                              threads=1, provenance={})
