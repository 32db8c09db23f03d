"""The hardware backend's parts that need no SSH: the inventory, the scenario as the host device
loads it, the wheel digest, the guard and the probe (real processes on loopback)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import REPO, write_scenario

from halp.errors import BackendError
from halp.scenario import load_scenario
from hw.install import wheel_digest, wheel_requires
from hw.inventory import device_scenario, inventory, shell_path

GUARD = REPO / "hw" / "guard.py"
PROBE = REPO / "hw" / "probe.py"

SCENARIO = """\
name: hw-parts
model: {{name: mobilenet_v1, width: 0.25, resolution: 128}}
devices:
  - {{name: pi0, role: host, profile: rpi4, address: 10.0.0.10, ssh_user: pi, ssh_key: keys/id}}
  - {{name: pi1, profile: {profile}, address: {address}, port: 5601}}
network: {{kind: star, bandwidth: 100Mbps}}
method: {{name: halp}}
"""


def scenario(tmp_path: Path, address: str = "10.0.0.11", profile: str = "rpi4"):
    return load_scenario(write_scenario(tmp_path, SCENARIO.format(address=address,
                                                                   profile=profile)))


def test_inventory_describes_every_device(tmp_path):
    inv = inventory(scenario(tmp_path))

    assert inv.host.device == "pi0"
    assert inv.host.where == "pi@10.0.0.10:22"
    assert inv.host.ssh_key == str(tmp_path / "keys" / "id")  # relative to the scenario
    (pi1,) = inv.secondaries
    assert pi1.endpoint == "tcp://10.0.0.11:5601"
    assert pi1.listen == "tcp://10.0.0.11:5601"
    assert inv.remote_dir == "~/halp" and inv.start_workers


def test_a_hostname_is_listened_on_every_interface(tmp_path):
    (pi1,) = inventory(scenario(tmp_path, address="pi1.local")).secondaries

    assert pi1.endpoint == "tcp://pi1.local:5601"
    assert pi1.listen == "tcp://0.0.0.0:5601"


def test_a_device_without_address_is_named(tmp_path):
    text = SCENARIO.format(address="10.0.0.11", profile="rpi4").replace(", address: 10.0.0.10", "")
    s = load_scenario(write_scenario(tmp_path, text))

    with pytest.raises(BackendError, match=r"devices.0 \(pi0\): no address"):
        inventory(s)


def test_host_scenario_carries_its_files_and_loads_beside_them(tmp_path):
    s = scenario(tmp_path, profile=str(REPO / "profiles" / "this-machine.yaml"))

    text, files = device_scenario(s)

    assert files == {"profiles/rpi4.yaml": (REPO / "profiles" / "rpi4.yaml").resolve(),
                     "profiles/this-machine.yaml": (REPO / "profiles" / "this-machine.yaml").resolve()}
    assert [d["profile"] for d in yaml.safe_load(text)["devices"]] == ["rpi4", "this-machine"]
    there = tmp_path / "device"  # as the host device will see it: no checkout, only these files
    for rel, path in files.items():
        (there / rel).parent.mkdir(parents=True, exist_ok=True)
        (there / rel).write_bytes(path.read_bytes())
    (there / "scenario.yaml").write_text(text)
    loaded = load_scenario(there / "scenario.yaml").cluster()
    assert [(d.name, d.profile.coefficients) for d in loaded.devices] == \
        [(d.name, d.profile.coefficients) for d in s.cluster().devices]


def test_shell_paths_leave_home_to_the_shell():
    assert shell_path("~/halp") == '"$HOME"/halp'
    assert shell_path("/opt/my halp") == "'/opt/my halp'"


def test_wheel_digest_ignores_timestamps(tmp_path):
    def wheel(path: Path, when: tuple) -> Path:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr(zipfile.ZipInfo("halp/__init__.py", when), "x = 1\n")
            z.writestr(zipfile.ZipInfo("halp-0.1.dist-info/METADATA", when),
                       "Name: halp\nRequires-Dist: torch==2.13.0\nRequires-Dist: numpy\n"
                       "Requires-Dist: pytest; extra == \"dev\"\n")
        return path

    a = wheel(tmp_path / "a.whl", (2020, 1, 1, 0, 0, 0))
    b = wheel(tmp_path / "b.whl", (2024, 6, 1, 12, 0, 0))

    assert wheel_digest(a) == wheel_digest(b)
    assert wheel_requires(a) == ("torch==2.13.0", "numpy")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"


def start_guard(tmp_path: Path, *command: str) -> tuple[subprocess.Popen, int, int]:
    guard = subprocess.Popen([sys.executable, str(GUARD), "--log", str(tmp_path / "log"),
                              "--grace", "2", "--", *command],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert guard.stdout is not None
    first = guard.stdout.readline().split()
    assert first[0] == "halp-guard"
    return guard, int(first[1].split("=")[1]), int(first[2].split("=")[1])


def test_guard_stops_its_command_when_its_stdin_closes(tmp_path):
    # A command that ignores SIGTERM and has a child of its own: the whole group goes.
    guard, guard_pid, child = start_guard(
        tmp_path, "sh", "-c", "trap '' TERM; sleep 60 & echo started; wait")
    assert guard.stdout.readline().strip() == "started"

    began = time.monotonic()
    guard.stdin.close()  # what a dropped SSH connection looks like to it
    rest = guard.stdout.read()
    guard.wait(timeout=10)

    assert time.monotonic() - began < 6
    assert rest.strip().endswith("halp-guard exit=137")  # SIGKILL after the grace period
    assert not alive(child) and guard.returncode == 137
    assert "started" in (tmp_path / "log").read_text()


def test_guard_exits_with_its_command(tmp_path):
    guard, _, _ = start_guard(tmp_path, sys.executable, "-c", "print('hello'); raise SystemExit(3)")

    out = guard.stdout.read()  # stdin stays open: closing it would mean "stop"
    guard.wait(timeout=30)

    assert out.splitlines() == ["hello", "halp-guard exit=3"]
    assert guard.returncode == 3


def test_guard_passes_sigterm_on(tmp_path):
    guard, _, child = start_guard(tmp_path, "sleep", "60")

    guard.send_signal(signal.SIGTERM)
    guard.wait(timeout=10)

    assert not alive(child)
    assert guard.returncode == 128 + signal.SIGTERM


def test_probe_measures_a_loopback_link():
    server = subprocess.Popen([sys.executable, str(PROBE), "serve", "--bind", "127.0.0.1",
                               "--max-s", "20"], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline().split()[-1])
        client = subprocess.run([sys.executable, str(PROBE), "client", f"x=127.0.0.1:{port}",
                                 "--rounds", "4", "--bytes", "200000"],
                                capture_output=True, text=True, timeout=30, check=True)
    finally:
        server.kill()
        server.wait()
    result = json.loads(client.stdout)["x"]

    assert abs(result["offset_s"]) <= result["uncertainty_s"] + 1e-3  # one clock
    assert result["to_bps"] > 1e6 and result["from_bps"] > 1e6


def test_probe_info_reports_versions_and_the_model_digest():
    from halp.model.zoo import ModelSpec, build_model, model_digest

    spec = {"name": "mobilenet_v1", "width": 0.25, "resolution": 128, "seed": 3}
    out = subprocess.run([sys.executable, str(PROBE), "info", "--model", json.dumps(spec)],
                         capture_output=True, text=True, timeout=120, check=True).stdout

    facts = json.loads(out)
    assert facts["torch"] and facts["python"].startswith("3.")
    assert facts["model_digest"] == model_digest(build_model(ModelSpec(**spec)))


def test_without_sshd_hw_tests_skip_or_fail_when_required(monkeypatch, tmp_path):
    import hw_support

    monkeypatch.setattr(hw_support, "SSHD", tmp_path / "no-sshd")
    monkeypatch.delenv("HALP_REQUIRE_EMU", raising=False)
    with pytest.raises(pytest.skip.Exception, match="OpenSSH's server"):
        hw_support.require_hw()

    monkeypatch.setenv("HALP_REQUIRE_EMU", "1")
    with pytest.raises(pytest.fail.Exception, match="HALP_REQUIRE_EMU=1 but .*OpenSSH's server"):
        hw_support.require_hw()


def test_an_erl_policy_travels_with_the_host_scenario(tmp_path):
    policy = tmp_path / "trained.pt"
    policy.write_bytes(b"weights")
    s = scenario(tmp_path, profile="rpi4").with_values({"method": {"name": "erl", "policy": str(policy)}})

    text, files = device_scenario(s)

    assert files["policy.pt"] == policy
    assert yaml.safe_load(text)["method"]["policy"] == "policy.pt"
