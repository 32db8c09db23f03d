"""The hardware backend end to end on a lab of three "devices": real sshd daemons on loopback
addresses, a separate SSH login and worker process per device, the HALP plan of a small
MobileNet-V1, every op traced and every output exact; `check`, `profile` and `validate` on the
same lab. Nothing may be left running from the lab's device folder afterwards."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hw_support import hw_required, lab_fixture  # noqa: F401  (fixtures: hw_required, lab)

from halp.latency.profile import load_profile
from halp.plan import Compute, Plan
from halp.runtime import TOLERANCE
from halp.runtime.auth import write_token
from halp.runtime.files import FILE_STORE, file_digest, stored_as
from halp.trace import read_trace_dir

from support import users_model

pytestmark = [pytest.mark.hw, pytest.mark.usefixtures("hw_required")]


def halp(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "halp.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def assert_clean(lab) -> None:
    assert lab.leftovers() == []
    runs = lab.remote_dir / "runs"
    assert not runs.is_dir() or not any(runs.iterdir()), "run folders left on a device"


def test_a_halp_run_on_three_devices_is_exact_and_fully_traced(lab, tmp_path):
    path = lab.write_scenario(lab.scenario_text(requests=3))
    out = tmp_path / "out"

    result = halp("run", str(path), "--backend", "hw", "--out", str(out), "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["backend"] == "hw"
    plan = Plan.from_dict(json.loads((out / "plan.json").read_text()))
    trace = read_trace_dir(out)
    assert [r.request for r in trace.requests] == [0, 1, 2]
    for record in trace.requests:
        assert record.extra["relative_error"] <= TOLERANCE  # the whole model's output, exactly
        ops = [op for op in trace.ops if op.request == record.request]
        assert sorted(op.op for op in ops) == sorted(op.id for op in plan.ops)
        eps = 1e-9  # the executor's times are sums of floats
        outside = [op for op in ops
                   if not record.arrival - eps <= op.start <= op.end <= record.finish + eps]
        assert outside == [], f"ops outside request {record}"
    computed = {op.device for op in trace.ops if op.kind == "compute"}
    planned = {op.device for op in plan.ops if isinstance(op, Compute)}
    assert computed == planned and len(planned) >= 2  # a secondary did part of the work
    transfers = [op for op in trace.ops if op.kind == "transfer"]
    assert transfers and all(op.bytes > 0 for op in transfers)
    for device in ("d1", "d2"):  # each secondary ran its own worker, started over its own SSH
        assert "listening on" in (out / "hw" / f"{device}.log").read_text()
    assert "outputs exact" in (out / "hw" / "d0.log").read_text()
    assert_clean(lab)


USERNET = """\
from torch import nn

def build():
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
"""


def test_a_users_model_and_weights_reach_every_device(lab, tmp_path):
    """Only this machine has the model's file and weights: the backend puts them in each
    secondary's file store, and the workers build from them what the host built."""
    spec = users_model(tmp_path / "mine", USERNET, 64)
    text = lab.scenario_text(requests=2).replace(
        "model: {name: mobilenet_v1, width: 0.25, resolution: 128}",
        f"model: {{name: custom, factory: '{spec.factory}', weights: {spec.weights}, "
        "input_shape: [3, 64, 64]}")
    out = tmp_path / "out"

    result = halp("run", str(lab.write_scenario(text)), "--backend", "hw", "--out", str(out))

    assert result.returncode == 0, result.stderr
    trace = read_trace_dir(out)
    assert [r.request for r in trace.requests] == [0, 1]
    assert all(r.extra["relative_error"] <= TOLERANCE for r in trace.requests)
    assert len({op.device for op in trace.ops if op.kind == "compute"}) >= 2
    for path in (tmp_path / "mine" / "net.py", tmp_path / "mine" / "trained.pt"):
        assert stored_as(lab.remote_dir / FILE_STORE, file_digest(path), path.name).is_file()
    checked = halp("hw", "check", str(lab.write_scenario(text)), "--json", "--rounds", "2",
                   "--probe-bytes", "100000")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert all(d["digest_matches"] for d in json.loads(checked.stdout))  # built from the copies
    assert_clean(lab)


def test_check_reports_versions_digests_clocks_and_bandwidth(lab):
    path = lab.write_scenario(lab.scenario_text())

    result = halp("hw", "check", str(path), "--json", "--rounds", "4", "--probe-bytes", "200000")

    assert result.returncode == 0, result.stdout + result.stderr
    devices = json.loads(result.stdout)
    assert [d["device"] for d in devices] == ["d0", "d1", "d2"]
    for d in devices:
        assert d["reachable"] and d["problems"] == []
        assert d["python"].startswith("3.") and d["torch"].startswith("2.13.0")
        assert d["digest_matches"] is True
    for d in devices[1:]:
        assert abs(d["clock_offset_s"]) <= d["clock_uncertainty_s"] + 1e-3  # one clock here
        assert d["to_bps"] > 1e6 and d["from_bps"] > 1e6
    assert not list(lab.remote_dir.glob("check-*"))
    assert_clean(lab)


def test_profile_runs_on_the_device_and_comes_back(lab, tmp_path):
    path = lab.write_scenario(lab.scenario_text())
    out = tmp_path / "profiles" / "lab.yaml"

    result = halp("hw", "profile", str(path), "d1", "--name", "lab", "--out", str(out),
                  "--quick", "--model", "mobilenet_v1", "--width", "0.25", "--resolution", "128",
                  "--repeats", "1", "--max-run", "1")

    assert result.returncode == 0, result.stderr
    profile = load_profile(str(out))
    assert profile.name == "lab" and profile.coefficients
    assert not list(lab.remote_dir.glob("profile-*"))
    assert_clean(lab)


def test_validate_against_running_workers_leaves_them_running(lab, tmp_path):
    # backends.hw.start_workers: false, as with hw/halp-worker.service on the Pis: the workers
    # are already up with the token `halp hw setup` installed, and the run must not stop them.
    token = lab.remote_dir / "token"
    write_token(token)
    workers = []
    try:
        for i in (1, 2):
            worker = subprocess.Popen(
                [sys.executable, "-m", "halp.cli", "worker", "--listen",
                 f"tcp://{lab.addresses[i]}:{17300 + i}", "--token", str(token), "--name", f"d{i}"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            workers.append(worker)
            assert "listening on" in worker.stdout.readline()
        path = lab.write_scenario(lab.scenario_text(requests=2, start_workers=False))

        result = halp("validate", str(path), "--against", "hw", "--json",
                      "--out", str(tmp_path / "validation"))

        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["requests"] == 2
        assert len(read_trace_dir(tmp_path / "validation" / "hw").requests) == 2
        assert all(w.poll() is None for w in workers)  # not ours to stop
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(timeout=10)
        token.unlink()
    assert [w.returncode for w in workers] == [0, 0]
    assert_clean(lab)
