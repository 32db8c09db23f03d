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
