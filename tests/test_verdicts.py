"""No time for a plan that computes something else: verdicts, their cache, and what run,
compare and sweep do with them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import write_scenario

from halp import verdicts
from halp.cli import main
from halp.errors import HalpError
from halp.experiment import execute
from halp.methods import prepare
from halp.policy import Served
from halp.scenario import load_scenario
from halp.serving import policy_for
from halp.verdicts import Checks, PlanMismatch, cache_dir, model_key, plan_digest

# Two models with a layer that claims to be torch.nn's own (so torch.fx keeps it whole and the
# testbed runs it as that layer) but computes something else: `skip`'s convolution adds one in
# its own forward, which the testbed's convolution runner never calls, so no plan of it is exact;
# `rowmean` has a layer that looks elementwise but mixes rows, so the whole-map plan is exact and
# split plans are not. (A model whose own forward adds a skip is traced as what it does.)
NET = """\
import torch
from torch import nn


class Skipped(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) + 1.0


class RowMean(nn.ReLU):
    def forward(self, x):
        return torch.relu(x - x.mean(dim=2, keepdim=True))


Skipped.__module__ = RowMean.__module__ = "torch.nn.modules.lying"


def skip():
    return nn.Sequential(Skipped(3, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1))


def rowmean():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), RowMean(), nn.Conv2d(4, 4, 3, padding=1),
                         nn.Flatten(), nn.Linear(4 * 32 * 32, 10))


def plain():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                         nn.Flatten(), nn.Linear(4 * 32 * 32, 10))
"""
SCENARIO = """\
name: net
seed: 1
model: {{name: custom, factory: net.py:{factory}, input_shape: [3, 32, 32]}}
devices:
  - {{name: a, role: host, profile: rpi4}}
  - {{name: b, profile: rpi4}}
network: {{kind: star, bandwidth: 50Mbps}}
method: {{name: {method}}}
workload: {{requests: 2, arrival: periodic, interval: 1s}}
"""


def scenario_file(folder: Path, factory: str, method: str = "modnn") -> Path:
    (folder / "net.py").write_text(NET)
    return write_scenario(folder, SCENARIO.format(factory=factory, method=method))


@pytest.fixture
def executions(monkeypatch) -> list[str]:
    """The method of every plan executed to check it (not read from a cache)."""
    seen: list[str] = []
    real = verdicts.execute

    def counting(plan, graph, x):
        seen.append(plan.method)
        return real(plan, graph, x)

    monkeypatch.setattr(verdicts, "execute", counting)
    return seen


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ---- run --------------------------------------------------------------------------------
def test_run_refuses_a_plan_that_computes_something_else_before_running(tmp_path, capsys):
    path = scenario_file(tmp_path, "skip", "halp")
    out = tmp_path / "out"

    code = main(["run", str(path), "--out", str(out)])

    line = one_line(capsys)
    assert code == 2
    assert "plan halp for net:skip computes something else (relative error" in line
    assert "> 1e-4); see halp verify" in line
    assert not out.exists()  # nothing on disk claims a time


def test_run_says_its_plans_were_verified_and_the_second_run_reads_the_cache(
        tmp_path, capsys, executions, halp_cache):
    path = scenario_file(tmp_path, "plain")

    assert main(["run", str(path), "--out", str(tmp_path / "one")]) == 0
    first = json.loads((tmp_path / "one" / "report.json").read_text())
    assert sorted(executions) == ["modnn", "standalone"]  # the plan and the speedup's reference
    assert main(["run", str(path), "--out", str(tmp_path / "two")]) == 0
    second = json.loads((tmp_path / "two" / "report.json").read_text())

    assert sorted(executions) == ["modnn", "standalone"]  # nothing executed the second time
    assert first["verified"] and second["verified"]
    assert first["verification"]["executed"] == 2 and first["verification"]["cache_hits"] == 0
    assert second["verification"]["executed"] == 0 and second["verification"]["cache_hits"] == 2
    assert second["verification"]["worst_relative_error"] <= verdicts.TOLERANCE
    assert len(list((halp_cache / "verdicts").glob("*.json"))) == 2
    assert "plans verified exact: 2, 2 of them from the cache" in capsys.readouterr().out


def test_a_cached_mismatch_still_refuses(tmp_path, capsys, executions):
    path = scenario_file(tmp_path, "skip", "halp")
    assert main(["run", str(path), "--out", str(tmp_path / "one")]) == 2
    capsys.readouterr()
    executions.clear()

    code = main(["run", str(path), "--out", str(tmp_path / "two")])

    assert code == 2 and executions == []
    assert "computes something else" in one_line(capsys)
    assert not (tmp_path / "two").exists()


def test_no_verify_runs_a_wrong_plan_and_says_it_was_not_verified(tmp_path, capsys, executions):
    path = scenario_file(tmp_path, "skip", "halp")
    out = tmp_path / "out"

    code = main(["run", str(path), "--out", str(out), "--no-verify"])

    assert code == 0 and executions == []
    report = json.loads((out / "report.json").read_text())
    assert report["verified"] is False
    assert report["verification"] == {"skipped": "--no-verify"}
    assert "plans not verified (--no-verify)" in capsys.readouterr().out
    assert main(["run", str(path), "--out", str(tmp_path / "json"), "--no-verify",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verified"] is False


def test_verify_stores_the_verdict_run_then_reads(tmp_path, capsys, executions):
    path = scenario_file(tmp_path, "plain")
    assert main(["verify", str(path)]) == 0
    assert executions == ["modnn"]
    assert main(["verify", str(path)]) == 0  # verify itself always executes again
    assert executions == ["modnn", "modnn"]
    capsys.readouterr()

    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--json"]) == 0

    assert executions == ["modnn", "modnn", "standalone"]
    summary = json.loads(capsys.readouterr().out)
    assert summary["verification"]["cache_hits"] == 1


def test_verify_names_a_mismatch_and_exits_1(tmp_path, capsys):
    path = scenario_file(tmp_path, "rowmean")
    assert main(["verify", str(path), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is False and result["tolerance"] == verdicts.TOLERANCE
    (plan,) = result["plans"]
    assert plan["method"] == "modnn" and not plan["exact"] and plan["relative_error"] > 0.01


# ---- compare and sweep --------------------------------------------------------------------
def test_compare_refuses_every_method_when_one_computes_something_else(tmp_path, capsys):
    path = scenario_file(tmp_path, "rowmean", "standalone")
    out = tmp_path / "cmp"

    code = main(["compare", str(path), "--methods", "standalone,modnn,offload", "--out",
                 str(out)])

    line = one_line(capsys)
    assert code == 2
    assert "plan modnn for net:rowmean computes something else" in line
    assert "nothing was run" in line and "--methods" in line
    assert not out.exists()


def test_compare_refuses_when_the_stand_alone_reference_computes_something_else(tmp_path,
                                                                                 capsys):
    path = scenario_file(tmp_path, "skip", "halp")
    out = tmp_path / "cmp"

    code = main(["compare", str(path), "--methods", "halp,modnn", "--out", str(out)])

    line = one_line(capsys)
    assert code == 2 and "plan standalone for net:skip computes something else" in line
    assert "every speedup's reference" in line and not out.exists()


def test_compare_without_the_wrong_method_runs_and_says_it_verified(tmp_path, capsys):
    path = scenario_file(tmp_path, "rowmean", "standalone")
    out = tmp_path / "cmp"

    assert main(["compare", str(path), "--methods", "standalone,offload", "--out", str(out)]) == 0

    result = json.loads((out / "compare.json").read_text())
    assert result["verified"] is True and result["verification"]["plans"] >= 2
    assert all(r["verified"] for r in result["methods"])
    rows = list(csv.DictReader((out / "compare.csv").open()))
    assert [r["verified"] for r in rows] == ["True", "True"]
    assert "plans verified exact" in capsys.readouterr().out


def test_compare_with_no_verify_runs_every_method_and_says_so(tmp_path, capsys):
    path = scenario_file(tmp_path, "rowmean", "standalone")
    out = tmp_path / "cmp"

    assert main(["compare", str(path), "--methods", "standalone,modnn", "--out", str(out),
                 "--no-verify"]) == 0

    result = json.loads((out / "compare.json").read_text())
    assert result["verified"] is False
    assert [r["verified"] for r in result["methods"]] == [False, False]
    assert "plans not verified (--no-verify)" in capsys.readouterr().out


def test_a_sweep_point_that_computes_something_else_is_a_failed_row(tmp_path, capsys):
    path = scenario_file(tmp_path, "rowmean", "standalone")
    out = tmp_path / "sweep"

    code = main(["sweep", str(path), "--set", "method.name=standalone,modnn", "--jobs", "1",
                 "--out", str(out)])

    rows = {r["method.name"]: r for r in csv.DictReader((out / "sweep.csv").open())}
    assert code == 1
    assert "computes something else" in rows["modnn"]["error"] and not rows["modnn"]["mean_s"]
    assert rows["standalone"]["verified"] == "True" and rows["standalone"]["mean_s"]
    assert main(["sweep", str(path), "--set", "method.name=standalone,modnn", "--jobs", "1",
                 "--out", str(tmp_path / "unverified"), "--no-verify"]) == 0
    rows = {r["method.name"]: r for r in csv.DictReader((tmp_path / "unverified" / "sweep.csv")
                                                        .open())}
    assert rows["modnn"]["verified"] == "False" and rows["modnn"]["mean_s"]
    assert "plans not verified (--no-verify)" in capsys.readouterr().out


# ---- plans made while serving -----------------------------------------------------------
class Switching:
    """Serves the stand-alone plan first, then another plan nobody listed up front (as a
    policy that re-plans while serving does)."""

    def __init__(self, first: Served, later: Served):
        self.first, self.later = first, later

    def serve(self, request, now_s, observed):
        return self.first if request == 0 else self.later

    def served(self):
        return [self.first]


def switching(path: Path) -> Switching:
    scenario = load_scenario(path)
    prepared = prepare(scenario)
    first = policy_for(scenario.with_values({"method.name": "standalone"}), prepared).served()[0]
    later = policy_for(scenario, prepared).served()[0]
    return Switching(first, later)


def test_a_wrong_plan_made_while_serving_stops_the_run_before_it_runs(tmp_path):
    path = scenario_file(tmp_path, "rowmean")
    out = tmp_path / "out"

    with pytest.raises(HalpError, match="plan modnn for net:rowmean computes something else"):
        execute(load_scenario(path), "sim", out, policy=switching(path))

    assert not (out / "report.json").exists()
    assert len((out / "requests.jsonl").read_text().splitlines()) == 1  # the exact plan's


def test_an_exact_plan_made_while_serving_is_counted(tmp_path):
    path = scenario_file(tmp_path, "plain")

    report = execute(load_scenario(path), "sim", None, policy=switching(path))

    assert report["verified"] and report["verification"]["checked_while_serving"] == 1
    assert report["verification"]["plans"] == 2


# ---- the cache ----------------------------------------------------------------------------
def test_the_cache_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HALP_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("HALP_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "halp"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "halp"


@pytest.mark.parametrize("garbage", [b"not json {", b"\xff\xfe\x00binary", b"[1, 2, 3]",
                                     b'{"format": "halp-verdict/1"}', b"", b"[" * 60_000,
                                     b" " * 100_000])
def test_a_corrupt_cache_file_is_ignored_and_written_again(tmp_path, executions, halp_cache,
                                                          garbage):
    path = scenario_file(tmp_path, "plain")
    assert main(["run", str(path), "--out", str(tmp_path / "one")]) == 0
    files = sorted((halp_cache / "verdicts").glob("*.json"))
    for file in files:
        file.write_bytes(garbage)
    executions.clear()

    assert main(["run", str(path), "--out", str(tmp_path / "two")]) == 0

    assert sorted(executions) == ["modnn", "standalone"]
    assert all(json.loads(f.read_text())["format"] == verdicts.FORMAT for f in files)


def test_a_verdict_for_other_keys_is_not_trusted(tmp_path, capsys, executions, halp_cache):
    # An exact verdict (the stand-alone plan's) copied over a mismatch's file does not make the
    # mismatch pass: its stored digests are not the ones asked for.
    path = scenario_file(tmp_path, "rowmean")
    assert main(["run", str(path), "--out", str(tmp_path / "one")]) == 2
    scenario = load_scenario(path)
    prepared = prepare(scenario)
    wrong = policy_for(scenario, prepared).served()[0]
    alone = policy_for(scenario.with_values({"method.name": "standalone"}),
                       prepared).served()[0]
    key = model_key(prepared)
    bad = verdicts.verdict_path(key, plan_digest(wrong.plan), scenario.seed)
    good = verdicts.verdict_path(key, plan_digest(alone.plan), scenario.seed)
    assert bad.is_file() and not json.loads(bad.read_text())["exact"]
    Checks(seed=scenario.seed).require([alone])  # now the exact verdict is on disk too
    bad.write_bytes(good.read_bytes())
    capsys.readouterr()
    executions.clear()

    assert main(["run", str(path), "--out", str(tmp_path / "two")]) == 2

    assert executions == ["modnn"]
    assert "computes something else" in one_line(capsys)


def test_tampered_weights_or_plan_are_checked_again(tmp_path, executions):
    scenario = load_scenario(scenario_file(tmp_path, "plain"))
    prepared = prepare(scenario)
    served = policy_for(scenario, prepared).served()[0]
    Checks().require([served])
    Checks().require([served])
    assert executions == ["modnn"]  # the second from the cache

    with torch.no_grad():
        next(prepared.model.parameters()).mul_(-1.0)
    Checks().require([served])
    served.plan.meta["tampered"] = True
    Checks().require([served])

    assert executions == ["modnn"] * 3


def test_an_edited_model_source_is_another_model(tmp_path):
    scenario = load_scenario(scenario_file(tmp_path, "plain"))
    prepared = prepare(scenario)
    before = model_key(prepared)
    (tmp_path / "net.py").write_text(NET + "\n# the forward changed\n")
    assert model_key(prepared) != before
    assert str(tmp_path / "net.py") in verdicts.model_parts(prepared)["code"]


def test_a_cache_that_cannot_be_written_costs_time_not_correctness(tmp_path, monkeypatch,
                                                                   executions):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("HALP_CACHE_DIR", str(blocked))
    path = scenario_file(tmp_path, "plain")

    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 0

    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["verified"] and str(blocked) in report["verification"]["cache_problem"]


def test_a_verdict_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    scenario = load_scenario(scenario_file(tmp_path, "plain"))
    prepared = prepare(scenario)
    served = policy_for(scenario, prepared).served()[0]
    checks = Checks(root=tmp_path / "cache")
    checks.require([served])
    (file,) = (tmp_path / "cache" / "verdicts").iterdir()
    before = file.read_bytes()

    def failing(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(verdicts.os, "replace", failing)
    Checks(root=tmp_path / "cache", fresh=True).require([served])

    assert [p.name for p in (tmp_path / "cache" / "verdicts").iterdir()] == [file.name]
    assert file.read_bytes() == before


def test_a_mismatch_refuses_with_its_verdict(tmp_path):
    scenario = load_scenario(scenario_file(tmp_path, "rowmean"))
    prepared = prepare(scenario)
    served = policy_for(scenario, prepared).served()[0]

    with pytest.raises(PlanMismatch) as caught:
        Checks(seed=scenario.seed).require([served])

    assert not caught.value.verdict.exact and caught.value.verdict.method == "modnn"
    assert "\n" not in str(caught.value)
