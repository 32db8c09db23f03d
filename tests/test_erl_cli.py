"""`halp train` writes a policy and its learning curve; `method: erl` then plans like any other."""

from __future__ import annotations

import json

import pytest
from conftest import write_scenario

from halp.cli import main
from halp.errors import HalpError
from halp.methods import make_plan
from halp.methods.erl import PolicyFile
from halp.scenario import load_scenario

SCENARIO = """
name: erl-cli
seed: 2
model: {name: mobilenet_v1, width: 0.25, resolution: 128}
devices:
  - {name: pi0, role: host, profile: rpi4}
  - {name: pi1, profile: rpi4, speed: 2.0}
  - {name: pi2, profile: rpi4, speed: 0.5}
network: {kind: star, bandwidth: 100Mbps, links: {pi2: 40Mbps}}
method: {name: erl, policy: policies/tiny.pt}
learning: {population: 3, elites: 1, episode_steps: 2, batch: 4, learner_steps: 5, hidden: 8,
           generations: 50}
"""


def test_train_writes_the_policy_and_its_curve_then_erl_plans(tmp_path, capsys):
    # Prepare: the scenario names the policy it is about to train (not there yet)
    path = write_scenario(tmp_path, SCENARIO)
    out = tmp_path / "policies" / "tiny.pt"
    # Execute
    code = main(["train", str(path), "--out", str(out), "--generations", "2", "--json"])
    # Assert: policy, CSV and PNG, and a summary
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["generations"] == 2 and summary["devices"] == ["pi0", "pi1", "pi2"]
    assert out.is_file() and out.with_suffix(".csv").is_file() and out.with_suffix(".png").is_file()
    assert len(out.with_suffix(".csv").read_text().splitlines()) == 1 + 2
    trained = json.loads(out.with_suffix(".json").read_text())
    assert set(trained["fingerprint"]["profiles"]) == {"pi0", "pi1", "pi2"}
    policy = PolicyFile.load(out)
    assert policy.cuts == summary["cuts"] and policy.hidden == 8
    # ... and the scenario now plans with it, a valid plan over the trained cuts
    scenario = load_scenario(path)
    plan = make_plan(scenario)  # validated against the graph
    assert plan.method == "erl" and [list(s) for s in plan.segments] == [
        [a, b] for a, b in zip(policy.cuts, policy.cuts[1:], strict=False)]


def test_train_prints_progress_on_stderr(tmp_path, capsys):
    path = write_scenario(tmp_path, SCENARIO)
    out = tmp_path / "p.pt"
    assert main(["train", str(path), "--out", str(out), "--generations", "1", "--mode", "ga",
                 "--set", "learning.population=2"]) == 0
    captured = capsys.readouterr()
    assert "gen 1/1" in captured.err and "wrote" in captured.out


def test_a_policy_for_other_devices_is_refused(tmp_path):
    path = write_scenario(tmp_path, SCENARIO)
    out = tmp_path / "policies" / "tiny.pt"
    main(["train", str(path), "--out", str(out), "--generations", "1", "--json"])
    two = write_scenario(tmp_path, SCENARIO.replace("  - {name: pi2, profile: rpi4, speed: 0.5}\n", "")
                         .replace(", links: {pi2: 40Mbps}", ""), "two.yaml")
    with pytest.raises(HalpError, match="trained for devices"):
        make_plan(load_scenario(two))


def test_a_policy_knows_when_a_profile_changed_under_it(tmp_path):
    from learning.train import stale
    from sim.env import Task

    path = write_scenario(tmp_path, SCENARIO)
    out = tmp_path / "policies" / "tiny.pt"
    main(["train", str(path), "--out", str(out), "--generations", "1", "--json"])
    task = Task.from_scenario(load_scenario(path))
    assert stale(task, out) is None
    trained = json.loads(out.with_suffix(".json").read_text())
    trained["fingerprint"]["profiles"]["pi1"] = "0" * 16
    out.with_suffix(".json").write_text(json.dumps(trained))
    assert "pi1" in stale(task, out)


@pytest.mark.parametrize("generations", ["0", "1000000000"])
def test_train_generations_out_of_bounds_is_refused_as_the_scenario_field(tmp_path, capsys,
                                                                          generations):
    path = write_scenario(tmp_path, SCENARIO)
    out = tmp_path / "policies" / "tiny.pt"

    code = main(["train", str(path), "--out", str(out), "--generations", generations])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "learning.generations" in err[0]
    assert not out.exists()
