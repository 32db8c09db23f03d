"""Model selection: the rule, the bandwidth estimator, and the seeded channel generators."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from halp.accuracy import known_variants, spec_of, top1
from halp.channel import gauss_markov, gilbert_elliott
from halp.methods.select import BandwidthEstimator, Candidate, SelectPolicy, choose
from halp.network import wire_bits
from halp.policy import Observation
from halp.scenario import load_scenario

SCENARIO = """\
name: sel
seed: 1
model: {{name: mobilenet_v1}}
devices:
  - {{name: a, role: host, profile: rpi4}}
  - {{name: b, profile: rpi4}}
network: {{kind: star, bandwidth: 20Mbps}}
method: {{name: select, base: {base}, variants: ["1.0_224", "0.5_160", "0.25_128"]}}
workload: {{requests: 3, arrival: periodic, interval: 1s{deadline}}}
"""


def policy(tmp_path: Path, base: str = "halp", deadline: str = "") -> SelectPolicy:
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.format(base=base, deadline=deadline))
    return SelectPolicy(load_scenario(path))


def cand(variant: str, predicted: float) -> Candidate:
    return Candidate(variant, None, None, predicted, top1(variant))  # type: ignore[arg-type]


@given(st.lists(st.tuples(st.sampled_from(known_variants()), st.floats(0.001, 5.0)), min_size=1, max_size=17),
       st.floats(0.0, 5.0))
def test_never_picks_a_predicted_miss_when_a_predicted_hit_exists(options, deadline):
    candidates = [cand(v, t) for v, t in options]
    pick = choose(candidates, deadline)
    hits = [c for c in candidates if c.predicted_s <= deadline]
    if hits:
        assert pick.predicted_s <= deadline
        assert pick.top1 == max(c.top1 for c in hits)
    else:
        assert pick.predicted_s == min(c.predicted_s for c in candidates)


def test_a_margin_keeps_the_chosen_prediction_that_far_under_the_deadline(tmp_path):
    p = policy(tmp_path, deadline=", deadline: 10s")
    predicted = {c.variant: c.predicted_s for c in p.candidates(p.cluster.bandwidth_bps)}
    # A deadline the most accurate variant meets by 5%: chosen without a margin, not with 10%.
    p.deadline_s = predicted["1.0_224"] / 0.95
    assert p.serve(0, 0.0, []).extra["variant"] == "1.0_224"
    p.method = p.method.model_copy(update={"margin": 0.1})
    pick = p.serve(1, 0.0, [])
    assert pick.extra["variant"] != "1.0_224"
    assert pick.predicted_s <= 0.9 * p.deadline_s


def test_unlimited_deadline_picks_the_most_accurate(tmp_path):
    p = policy(tmp_path)
    assert p.serve(0, 0.0, []).extra["variant"] == "1.0_224"


def test_zero_deadline_picks_the_fastest(tmp_path):
    p = policy(tmp_path, deadline=", deadline: 0s")
    served = p.serve(0, 0.0, [])
    fastest = min(p.candidates(p.cluster.bandwidth_bps), key=lambda c: c.predicted_s)
    assert served.extra["variant"] == fastest.variant == "0.25_128"


def test_standalone_selection_ignores_a_bandwidth_drop(tmp_path):
    p = policy(tmp_path, base="standalone", deadline=", deadline: 10s")
    assert p.serve(0, 0.0, []).extra["variant"] == "1.0_224"
    # Stand-alone never uses the network, so the choice cannot depend on it.
    drop = [Observation(1.0, "b", 100_000, 1.0)] * 10
    assert p.serve(1, 2.0, drop).extra["variant"] == "1.0_224"


@pytest.mark.parametrize("per_byte", [0.0, 2e-9])  # a message's signing and checking, per byte
def test_estimator_converges_on_a_constant_channel(per_byte):
    fixed = 0.001
    est = BandwidthEstimator({"b": 1e6}, fixed, window=8, per_byte_s=per_byte)
    observed = [Observation(i, "b", n, fixed + per_byte * n + wire_bits(n) / 40e6)
                for i, n in enumerate([10_000, 200, 3_000_000] * 5)]
    assert est.estimate(observed)["b"] == pytest.approx(40e6, rel=1e-9)


def test_estimator_follows_a_step_within_one_window():
    window, fixed = 4, 0.0005
    est = BandwidthEstimator({"b": 50e6}, fixed, window)
    before = [Observation(i, "b", 100_000, fixed + wire_bits(100_000) / 50e6) for i in range(20)]
    after = [Observation(20 + i, "b", 100_000, fixed + wire_bits(100_000) / 5e6) for i in range(window)]
    assert est.estimate(before)["b"] == pytest.approx(50e6)
    assert est.estimate(before + after[:1])["b"] < 50e6  # moves at once
    assert est.estimate(before + after)["b"] == pytest.approx(5e6)  # there after `window` transfers


def test_estimator_holds_nominal_until_observed():
    est = BandwidthEstimator({"b": 7e6, "c": 9e6}, 0.0, 4)
    assert est.estimate([Observation(0, "b", 100_000, 0.1)]) == {"b": wire_bits(100_000) / 0.1, "c": 9e6}


def test_small_transfers_do_not_hide_a_drop():
    est = BandwidthEstimator({"b": 50e6}, 0.0, window=2)
    slow = [Observation(t, "b", 100_000, wire_bits(100_000) / 5e6) for t in (1.0, 2.0)]
    burst = [Observation(3.0 + t, "b", 2_000, wire_bits(2_000) / 50e6) for t in (0.0, 0.1)]  # line rate
    assert est.estimate(slow + burst)["b"] == pytest.approx(5e6)


def test_generators_are_reproducible_and_seed_dependent():
    a = gilbert_elliott(50e6, 5e6, 0.2, 0.3, 1.0, 100.0, seed=4)
    b = gilbert_elliott(50e6, 5e6, 0.2, 0.3, 1.0, 100.0, seed=4)
    c = gilbert_elliott(50e6, 5e6, 0.2, 0.3, 1.0, 100.0, seed=5)
    assert a == b != c
    assert set(a.values) == {50e6, 5e6}
    g = gauss_markov(40e6, 10e6, 0.9, 1.0, 500.0, seed=1, floor_bps=1e6)
    assert g == gauss_markov(40e6, 10e6, 0.9, 1.0, 500.0, seed=1, floor_bps=1e6)
    assert min(g.values) >= 1e6
    assert sum(g.values) / len(g.values) == pytest.approx(40e6, rel=0.25)


def test_every_known_variant_name_round_trips_through_its_spec():
    for v in known_variants():
        assert spec_of(v).variant == v


def test_estimator_forgets_a_quiet_link():
    est = BandwidthEstimator({"b": 50e6}, 0.0, window=4, horizon_s=10.0)
    slow = [Observation(t, "b", 100_000, wire_bits(100_000) / 5e6) for t in (1.0, 2.0, 3.0)]
    assert est.estimate(slow, now_s=5.0)["b"] == pytest.approx(5e6)
    assert est.estimate(slow, now_s=20.0)["b"] == 50e6  # nothing recent: back to nominal


def test_predictions_are_made_at_the_estimate_not_at_its_bucket(tmp_path):
    from halp.schedule import estimate

    p = policy(tmp_path)
    # 70 Mbps measured on b: a plan is cached for its bucket, the prediction is for 70 Mbps
    # (a rate at which b's link is on the plan's longest path, so the rate shows; below it,
    # the Pi's convolutions are fast enough that HALP gives b almost nothing).
    seen = [Observation(1.0, "b", 1_000_000, wire_bits(1_000_000) / 70e6 + p.estimator.fixed_s)] * 3
    served = p.serve(0, 2.0, seen)
    assert served.extra["bandwidth_estimate_bps"]["b"] == pytest.approx(70e6)
    exact = p.latency.at(p.cluster.with_bandwidth({"b": 70e6}))
    assert served.predicted_s == pytest.approx(estimate(served.plan, served.prepared.graph, exact).makespan)
    bucket = next(c for c in p.candidates({"b": 70e6}) if c.variant == served.extra["variant"])
    assert bucket.predicted_s != pytest.approx(served.predicted_s)  # the bucket's rate is not 70 Mbps
