"""`halp hw setup` for real on the lab: a wheel of this checkout copied across, a fresh venv
made by the device's own interpreter, torch from the registry, then nothing to do the second
time; the installed project then checks out and serves a run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hw_support import hw_required, lab_fixture  # noqa: F401  (fixtures: hw_required, lab)

from halp.trace import read_trace_dir
from hw.install import build_wheel

pytestmark = [pytest.mark.hw, pytest.mark.usefixtures("hw_required")]

# A plain interpreter without torch, as on a fresh Raspberry Pi OS.
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)


def halp(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "halp.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.long  # a minute: a venv and torch installed on the device
def test_setup_installs_once_and_the_installation_serves_a_run(lab, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # the controller's token
    home = tmp_path / "device-home"
    lines = [lab.device_line(i, python=BASE_PYTHON) for i in range(3)]
    path = lab.write_scenario(lab.scenario_text(lines=lines, remote_dir=home, requests=2),
                              name="fresh.yaml")

    # This checkout's wheel, built once: other edits to the checkout while the test runs
    # would (rightly) make a second build a new version.
    wheel = build_wheel(tmp_path / "wheel", log=lambda _: None)
    assert wheel.name.startswith("halp_testbed-") and wheel.torch == "torch==2.13.0"

    first = halp("hw", "setup", str(path), "--wheel", str(wheel.path))

    assert first.returncode == 0, first.stdout + first.stderr
    d0, d1, d2 = first.stdout.splitlines()
    assert f"created {home}/venv" in d0 and "installed torch 2.13.0" in d0
    assert "installed halp_testbed-" in d0 and f"installed the token {home}/token" in d0
    # The three lab devices are one machine with one remote_dir: installed once.
    assert d1 == f"d1: shares d0's installation in {home}"
    assert d2 == f"d2: shares d0's installation in {home}"
    installed = json.loads((home / "installed.json").read_text())
    venv_python = home / "venv" / "bin" / "python"
    where = subprocess.run([str(venv_python), "-c", "import halp; print(halp.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert where.startswith(str(home / "venv"))  # the wheel, not this checkout
    assert (home / "token").stat().st_mode & 0o777 == 0o600

    second = halp("hw", "setup", str(path), "--wheel", str(wheel.path))

    assert second.returncode == 0, second.stderr
    line = second.stdout.splitlines()[0]
    assert "torch 2.13.0" in line and "present" in line
    assert f"halp up to date (digest {installed['digest']})" in line
    assert "created" not in line and "installed" not in line

    check = halp("hw", "check", str(path), "--json", "--rounds", "2", "--probe-bytes", "100000")
    assert check.returncode == 0, check.stdout + check.stderr
    assert all(d["installed"] == installed["digest"] and d["digest_matches"]
               for d in json.loads(check.stdout))

    run = halp("run", str(path), "--backend", "hw", "--out", str(tmp_path / "out"))
    assert run.returncode == 0, run.stderr
    assert len(read_trace_dir(tmp_path / "out").requests) == 2
    assert lab.leftovers() == []
