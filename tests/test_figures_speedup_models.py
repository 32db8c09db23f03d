"""figures/speedup_models.py: speed-up against devices per model, simulated; the emulated
points' bookkeeping with the simulator standing in for the emulator (no Mininet here)."""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from sim_cases import REPO

from halp.cli import main as halp_main
from halp.cli.figures_cmd import load
from halp.errors import BackendError, HalpError
from halp.latency.profile import load_profile
from halp.scenario import Scenario
from halp.trace import Trace, TraceWriter
from sim.backend import BACKEND as simulator

# Two of the new DAG models at a reduced resolution: seconds, not minutes.
MODELS = [({"name": "resnet18", "resolution": 64}, "ResNet-18 (64)"),
          ({"name": "mobilenet_v2", "resolution": 64}, "MobileNet-V2 (64)")]
DEVICES = (1, 2, 3)
METHODS = ["standalone", "equal", "halp", "modnn", "deepthings", "offload"]

PI = load_profile("rpi4")  # the simulated devices' profile (scenarios/vgg16-8dev.yaml)


@pytest.fixture(scope="module")
def figure() -> ModuleType:
    return load(REPO / "figures" / "speedup_models.py")


@pytest.fixture(scope="module")
def drawn(figure: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("speedup_models")
    written = figure.main(out, models=MODELS, devices=DEVICES, emu_requests=0)
    assert written == [out / "speedup_models.png", out / "speedup_models.csv"]
    return out


def rows_of(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def speedup(rows: list[dict[str, str]], model: str, n: int, method: str) -> float:
    (row,) = [r for r in rows if (r["model"], int(r["devices"]), r["method"]) == (model, n, method)]
    return float(row["speedup"])


def test_the_table_has_one_row_per_model_method_and_device_count(drawn):
    rows = rows_of(drawn / "speedup_models.csv")
    keys = [(r["model"], int(r["devices"]), r["method"]) for r in rows]
    assert sorted(keys) == sorted((title, n, m) for _, title in MODELS for n in DEVICES
                                  for m in METHODS)
    assert (drawn / "speedup_models.png").read_bytes()[:4] == b"\x89PNG"
    assert not (drawn / "speedup_models_emu.png").exists()  # simulated only


def test_speedup_is_standalone_latency_over_the_methods(drawn):
    rows = rows_of(drawn / "speedup_models.csv")
    for r in rows:
        latency, alone = float(r["latency_s"]), float(r["standalone_s"])
        assert latency > 0 and float(r["speedup"]) == pytest.approx(alone / latency, rel=1e-3)
        if r["method"] == "standalone":
            assert float(r["speedup"]) == 1.0
    # The stand-alone latency is the host's alone: the same whatever the number of devices.
    for _, title in MODELS:
        assert len({r["standalone_s"] for r in rows if r["model"] == title}) == 1


def test_nothing_beats_standalone_on_one_device_and_halp_beats_equal_split(drawn):
    rows = rows_of(drawn / "speedup_models.csv")
    for _, title in MODELS:
        alone = next(float(r["standalone_s"]) for r in rows if r["model"] == title)
        for method in METHODS:
            # Within one op overhead: offload that keeps everything on the host runs it as one
            # op, where stand-alone runs two (the maps, then the tail).
            assert speedup(rows, title, 1, method) <= alone / (alone - PI.op_overhead_s) + 1e-4
        for n in (2, 3):
            assert speedup(rows, title, n, "halp") > 1.0
        assert speedup(rows, title, 3, "halp") >= speedup(rows, title, 3, "equal")


def test_figure_is_listed_by_halp_figures(capsys):
    assert halp_main(["figures", "--list"]) == 0
    assert "speedup_models" in capsys.readouterr().out


def test_a_bad_request_count_is_one_line(figure, monkeypatch):
    monkeypatch.setenv(figure.EMU_ENV, "lots")
    with pytest.raises(HalpError, match="number of requests"):
        figure.emu_requests_from_env()
    monkeypatch.setenv(figure.EMU_ENV, "")
    assert figure.emu_requests_from_env() == 0


def test_emulated_points_ask_for_the_emulator_before_simulating(figure, monkeypatch, tmp_path):
    def refuse(name: str, scenario: Scenario) -> None:
        assert name == "emu"
        raise BackendError("the emulator needs Mininet")

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("simulated before the emulator said it can run")

    monkeypatch.setattr(figure, "ready_backend", refuse)
    monkeypatch.setattr(figure, "simulated", never)
    monkeypatch.setenv(figure.EMU_ENV, "4")
    with pytest.raises(HalpError, match=f"unset {figure.EMU_ENV}"):
        figure.main(tmp_path, models=MODELS, devices=DEVICES)
    assert not list(tmp_path.iterdir())


class SimulatedRun:
    """EmulatedRun's serving/serve, answered by the simulator."""

    served: list[Scenario] = []

    def __init__(self, scenario: Scenario, run_dir: Path, log: Any):
        self.scenario = scenario

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        yield None

    def serve(self, net: None, scenario: Scenario, policy: Any, name: str) -> Trace:
        assert scenario.devices == self.scenario.devices  # one network serves every point
        self.served.append(scenario)
        return simulator.run(scenario, policy, TraceWriter(None, "sim", scenario.method.name))


def test_emulated_points_are_medians_of_rounds_and_drawn_beside(figure, monkeypatch, tmp_path):
    import emu.backend

    monkeypatch.setattr(figure, "ready_backend", lambda name, scenario: None)
    monkeypatch.setattr(figure, "quota_runner", lambda name: SimpleNamespace(probe_limited=None))
    monkeypatch.setattr(figure, "check_profiles", lambda profiles, probe_in_quota: ({}, []))
    monkeypatch.setattr(emu.backend, "EmulatedRun", SimulatedRun)
    SimulatedRun.served = []
    written = figure.main(tmp_path, models=MODELS, devices=(1, 3), emu_requests=3)
    assert [p.name for p in written] == ["speedup_models.png", "speedup_models.csv",
                                         "speedup_models_emu.png", "speedup_models_emu.csv"]
    # Two rounds, methods in turn, two requests each (3 rounded up), on emu-q quarter cores.
    assert len(SimulatedRun.served) == 2 * len(MODELS) * len(figure.EMU_METHODS)
    assert all(s.workload.requests == 2 and d.profile == "emu-q" and d.cpu_share == 0.25
               for s in SimulatedRun.served for d in s.devices)
    rows = rows_of(tmp_path / "speedup_models_emu.csv")
    assert sorted((r["model"], r["backend"], r["method"]) for r in rows) == sorted(
        (title, backend, m) for _, title in MODELS for backend in ("sim", "emu")
        for m in figure.EMU_METHODS)
    predicted = {(r["model"], r["method"]): float(r["speedup"]) for r in rows
                 if r["backend"] == "sim"}
    for r in rows:
        assert int(r["devices"]) == 3
        if r["backend"] == "emu":
            # The simulator standing in: requests far enough apart never wait, so the medians'
            # ratio is the one-request prediction.
            assert int(r["requests"]) == 4 and r["exact"] == "True"
            assert float(r["max_s"]) < float(r["interval_s"])
            assert float(r["speedup"]) == pytest.approx(predicted[(r["model"], r["method"])],
                                                        rel=1e-3)
    assert (tmp_path / "speedup_models_emu.png").read_bytes()[:4] == b"\x89PNG"
