"""`halp run`, `halp compare`, `halp sweep` and `halp figures` on the simulator, end to end."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import write_scenario
from sim_cases import REPO

from halp.cli import main
from halp.errors import BackendError
from halp.plan import Plan
from halp.scenario import load_scenario
from halp.sweep import axes_of, grid, split_values
from halp.trace import OpRecord, TraceWriter

SMALL = """\
name: small
seed: 2
model: {name: mobilenet_v1, width: 0.25, resolution: 128}
devices:
  - {name: a, role: host, profile: rpi4}
  - {name: b, profile: rpi4}
  - {name: c, profile: rpi4, speed: 2.0}
network: {kind: star, bandwidth: 50Mbps}
method: {name: halp}
workload: {requests: 3, arrival: periodic, interval: 1s, deadline: 1s}
"""
RUN_FILES = ["scenario.yaml", "plan.json", "ops.jsonl", "requests.jsonl", "report.json",
             "timeline.png", "trace.json"]


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    return path


def test_run_writes_the_output_folder(small, tmp_path, capsys):
    # Execute
    code = main(["run", str(small), "--out", str(tmp_path / "out"), "--json"])
    # Assert
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert {"method", "backend", "requests", "latency_s", "standalone_latency_s", "speedup",
            "deadline_hit_rate", "out"} <= set(summary)
    assert summary["method"] == "halp" and summary["backend"] == "sim"
    assert set(summary["latency_s"]) == {"mean", "p50", "p95", "max"}
    assert summary["speedup"] == pytest.approx(summary["standalone_latency_s"]
                                               / summary["latency_s"]["mean"])
    out = tmp_path / "out"
    assert all((out / name).is_file() for name in RUN_FILES)
    assert load_scenario(out / "scenario.yaml").name == "small"  # the scenario as run loads
    plan = Plan.from_dict(json.loads((out / "plan.json").read_text()))
    ops = (out / "ops.jsonl").read_text().splitlines()
    assert len(ops) == 3 * len(plan.ops)
    assert len((out / "requests.jsonl").read_text().splitlines()) == 3
    assert json.loads((out / "trace.json").read_text())["traceEvents"]


def strict_json(text: str):
    """JSON as the standard has it: NaN and Infinity are not numbers."""
    def refuse(constant: str):
        raise ValueError(f"{constant} in JSON")
    return json.loads(text, parse_constant=refuse)


def test_every_file_of_a_run_is_strict_json(small, tmp_path):
    assert main(["run", str(small), "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    for name in ("plan.json", "report.json", "trace.json"):
        strict_json((out / name).read_text())
    for name in ("ops.jsonl", "requests.jsonl"):
        for line in (out / name).read_text().splitlines():
            strict_json(line)


def test_a_nan_in_a_record_fails_loudly_instead_of_writing_invalid_json(tmp_path):
    with TraceWriter(tmp_path, "sim", "halp") as writer, pytest.raises(ValueError):
        writer.op(OpRecord(0, "c1", "compute", "a", "a", 0.0, float("nan")))


def test_run_prints_a_summary_to_a_default_folder(small, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(small), "--set", "workload.requests=1",
                 "--set", "workload.requests=2"]) == 0  # the same key twice: the last wins
    text = capsys.readouterr().out
    assert "2 request(s)" in text and "speedup" in text
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.startswith("small-sim-")


class FailingPolicy:
    """Serves like the real policy, but the third request fails the way a dead device would."""

    def __init__(self, inner):
        self.inner = inner

    def serve(self, request, now_s, observed):
        if request == 2:
            raise BackendError("device c stopped answering")
        return self.inner.serve(request, now_s, observed)

    def served(self):
        return self.inner.served()


def test_records_stay_on_disk_when_the_backend_fails(small, tmp_path, monkeypatch, capsys):
    # Prepare
    from halp import experiment

    real = experiment.policy_for
    monkeypatch.setattr(experiment, "policy_for", lambda s: FailingPolicy(real(s)))
    out = tmp_path / "out"
    # Execute
    code = main(["run", str(small), "--out", str(out)])
    # Assert: one line naming the failure and where the records are; two requests on disk.
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "stopped answering" in err and str(out) in err
    assert len((out / "requests.jsonl").read_text().splitlines()) == 2
    assert (out / "ops.jsonl").read_text().strip()


def test_an_out_folder_that_cannot_be_made_is_one_line(small, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file, not a folder")
    code = main(["run", str(small), "--out", str(tmp_path / "taken" / "out")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / "taken" / "out") in err


def test_compare_puts_methods_side_by_side(small, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", str(small), "--methods", "halp,modnn,standalone", "--out", str(out),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in result["methods"]] == ["halp", "modnn", "standalone"]
    alone = next(r for r in result["methods"] if r["method"] == "standalone")
    assert alone["single_request_s"] == pytest.approx(result["standalone_latency_s"])
    for name in ("compare.png", "compare.csv", "compare.json", "halp/timeline.png"):
        assert (out / name).is_file()


def test_compare_table_says_where_the_figures_are(small, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", str(small), "--methods", "halp,standalone", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "halp" in text and "standalone" in text and str(out / "compare.png") in text


def test_compare_rejects_an_unknown_method(small, capsys):
    assert main(["compare", str(small), "--methods", "halp,magic"]) == 2
    assert "magic" in capsys.readouterr().err


def test_sweep_values_split_on_commas_outside_brackets():
    assert split_values("10Mbps, 50Mbps,100Mbps") == ["10Mbps", "50Mbps", "100Mbps"]
    assert split_values("[3,3],[4,4]") == ["[3,3]", "[4,4]"]
    fixed, axes = axes_of(["a.b=1", "c=x,y", "a.b=2", "d=[1,2]"])
    assert fixed == {"a.b": 2, "d": [1, 2]} and axes == {"c": ["x", "y"]}
    assert grid({"p": [1, 2], "q": ["u", "v"]}) == [
        {"p": 1, "q": "u"}, {"p": 1, "q": "v"}, {"p": 2, "q": "u"}, {"p": 2, "q": "v"}]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_sweep_writes_a_csv_and_a_plot(small, tmp_path, capsys, jobs):
    out = tmp_path / "sweep"
    assert main(["sweep", str(small), "--set", "network.bandwidth=5Mbps,100Mbps",
                 "--set", "method.name=halp,standalone", "--set", "workload.requests=1",
                 "--jobs", jobs, "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [(r["network.bandwidth"], r["method.name"]) for r in rows] == [
        ("5Mbps", "halp"), ("5Mbps", "standalone"), ("100Mbps", "halp"), ("100Mbps", "standalone")]
    assert all(float(r["mean_s"]) > 0 and not r["error"] for r in rows)
    assert float(rows[2]["mean_s"]) <= float(rows[0]["mean_s"])  # more bandwidth, no slower
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "sweep:" in capsys.readouterr().err  # the progress bar


def test_sweep_needs_an_axis(small, capsys):
    assert main(["sweep", str(small), "--set", "method.name=halp"]) == 2
    assert "nothing to sweep" in capsys.readouterr().err


def test_figures_are_listed_and_each_script_has_main(capsys):
    assert main(["figures", "--list"]) == 0
    listed = capsys.readouterr().out
    scripts = sorted(p for p in (REPO / "figures").glob("*.py") if not p.stem.startswith("_"))
    assert {"latency_vs_bandwidth", "speedup_vs_devices", "timeline_halp_modnn"} <= {
        p.stem for p in scripts}
    from halp.cli.figures_cmd import load

    for script in scripts:
        assert script.stem in listed
        assert callable(load(script).main)


def test_figures_rejects_an_unknown_name(capsys):
    assert main(["figures", "no_such_figure"]) == 2
    assert "latency_vs_bandwidth" in capsys.readouterr().err


def test_timeline_figure_is_drawn(tmp_path):
    assert main(["figures", "timeline_halp_modnn", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "timeline_halp_modnn.png").read_bytes()[:4] == b"\x89PNG"


def test_a_workload_whose_records_would_not_fit_is_refused_before_anything_is_written(
        tmp_path, capsys):
    from halp.scenario import MAX_RECORDED_OPS

    path = write_scenario(tmp_path, """\
name: many
model: {name: mobilenet_v1, width: 0.25, resolution: 128}
devices:
  - {name: a, role: host, profile: this-machine, speed: 0.2}
  - {name: b, profile: this-machine}
network: {kind: star, bandwidth: 50Mbps}
method: {name: modnn}
workload: {requests: 100000, arrival: periodic, interval: 100ms}
""")
    out = tmp_path / "out"

    code = main(["run", str(path), "--out", str(out)])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "workload.requests" in err[0] and f"{MAX_RECORDED_OPS:,}" in err[0]
    assert not out.exists()


def test_compare_runs_the_scenarios_own_method_with_its_options_and_exits_1_if_it_fails(
        tmp_path, capsys):
    path = write_scenario(tmp_path, """\
name: half
model: {name: mobilenet_v1, width: 0.25, resolution: 128}
devices:
  - {name: a, role: host, profile: this-machine, speed: 0.2}
  - {name: b, profile: this-machine}
network: {kind: star, bandwidth: 50Mbps}
method: {name: offload, cut: 9999}
workload: {requests: 2, arrival: periodic, interval: 100ms}
""")
    out = tmp_path / "out"

    code = main(["compare", str(path), "--methods", "offload,standalone", "--out", str(out)])

    err = capsys.readouterr().err
    assert code == 1
    assert "offload failed" in err and "9999" in err and "1 of 2 methods failed" in err
    rows = {r["method"]: r for r in csv.DictReader((out / "compare.csv").open())}
    assert "9999" in rows["offload"]["error"] and rows["standalone"]["mean_s"]
