"""`halp sweep --ray ADDRESS` on a real Ray instance that this module starts and stops itself."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from halp.cli import main
from halp.cli.sweep_cmd import SOME_FAILED

from support import require_ray

REPO = Path(__file__).resolve().parents[1]
GRID = ["--set", "network.bandwidth=10Mbps,100Mbps", "--set", "method.name=halp,standalone"]
# Recent Ray (2.60) turns token authentication on by itself when ~/.ray/auth_token exists (a
# local `ray.init` writes one); the instances here run without it, driver and head alike.
NO_AUTH = {"RAY_AUTH_MODE": "disabled"}


def test_sweep_on_ray_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    assert main(["sweep", str(REPO / "scenarios" / "default.yaml"), *GRID, "--ray", "auto",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install ray" in err


def test_without_ray_the_ray_tests_skip_or_fail_when_required(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.delenv("HALP_REQUIRE_EMU", raising=False)
    with pytest.raises(pytest.skip.Exception, match="need ray"):
        require_ray()

    monkeypatch.setenv("HALP_REQUIRE_EMU", "1")
    with pytest.raises(pytest.fail.Exception, match="HALP_REQUIRE_EMU=1 but .*need ray"):
        require_ray()


@pytest.fixture(scope="module")
def ray_address(ray_required):
    """A head node with 2 CPUs in its own session and temp dir; stopped by its process group."""
    temp = Path(tempfile.mkdtemp(prefix="halp-ray-", dir="/tmp"))  # short: Ray's socket paths
    ray_cli = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", "--port=0", "--num-cpus=2",
         "--include-dashboard=false", "--dashboard-port=0", "--disable-usage-stats",
         f"--temp-dir={temp}"],
        env={**os.environ, **NO_AUTH}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        address_file = temp / "ray_current_cluster"
        deadline = time.monotonic() + 60
        while not address_file.is_file() or not address_file.read_text().strip():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`ray start --head` did not come up (exit {head.poll()})")
            time.sleep(0.2)
        yield address_file.read_text().strip()
    finally:
        head.terminate()  # `ray start --block` stops its node on SIGTERM ...
        try:
            head.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)  # ... and whatever of its group is left goes
        except ProcessLookupError:
            pass
        head.wait()
        remove(temp)


def remove(temp: Path) -> None:
    """Delete a Ray temp dir; Ray's processes may still write their last logs for a moment."""
    for _ in range(100):
        shutil.rmtree(temp, ignore_errors=True)
        if not temp.exists():
            return
        time.sleep(0.1)


def read_rows(folder: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((folder / "sweep.csv").open()))


@pytest.mark.usefixtures("ray_required")
@pytest.mark.slow
@pytest.mark.long  # half a minute: starts a Ray cluster
def test_sweep_on_a_ray_cluster_matches_the_process_pool(ray_address, tmp_path, monkeypatch,
                                                         capsys):
    monkeypatch.setenv("RAY_AUTH_MODE", NO_AUTH["RAY_AUTH_MODE"])
    scenario = str(REPO / "scenarios" / "default.yaml")
    # Execute
    assert main(["sweep", scenario, *GRID, "--ray", ray_address,
                 "--out", str(tmp_path / "ray")]) == 0
    err = capsys.readouterr().err
    assert main(["sweep", scenario, *GRID, "--jobs", "2", "--out", str(tmp_path / "pool")]) == 0
    # Assert
    on_ray, in_pool = read_rows(tmp_path / "ray"), read_rows(tmp_path / "pool")
    assert [(r["network.bandwidth"], r["method.name"]) for r in on_ray] == [
        ("10Mbps", "halp"), ("10Mbps", "standalone"), ("100Mbps", "halp"),
        ("100Mbps", "standalone")]
    assert all(float(r["mean_s"]) > 0 and not r["error"] for r in on_ray)
    assert on_ray == in_pool  # the simulator is deterministic: every column equal
    assert (tmp_path / "ray" / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "4/4 points" in err  # the progress bar
    import ray

    assert not ray.is_initialized()  # the CLI disconnected


@pytest.mark.usefixtures("ray_required")
def test_sweep_on_ray_rejects_an_unreachable_address(tmp_path, capsys):
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    assert main(["sweep", str(REPO / "scenarios" / "default.yaml"), *GRID,
                 "--ray", f"127.0.0.1:{port}", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"127.0.0.1:{port}" in err and "auto" in err
    assert time.monotonic() - started < 30
    import ray

    assert not ray.is_initialized()


@pytest.mark.usefixtures("ray_required")
@pytest.mark.slow
def test_sweep_on_a_local_ray_instance_keeps_errors_as_rows_and_stops_it(tmp_path, monkeypatch):
    """`--ray local` starts a Ray instance for this sweep alone, and stops it afterwards."""
    temp = tempfile.mkdtemp(prefix="halp-ray-", dir="/tmp")
    monkeypatch.setenv("RAY_AUTH_MODE", NO_AUTH["RAY_AUTH_MODE"])
    monkeypatch.setenv("RAY_TMPDIR", temp)
    try:
        assert main(["sweep", str(REPO / "scenarios" / "default.yaml"),
                     "--set", "method.name=halp,nosuchmethod", "--set", "workload.requests=2",
                     "--ray", "local", "--out", str(tmp_path)]) == SOME_FAILED
    finally:
        remove(Path(temp))
    halp, unknown = read_rows(tmp_path)
    assert float(halp["mean_s"]) > 0 and not halp["error"]
    assert unknown["mean_s"] == "" and "nosuchmethod" in unknown["error"]  # an error is a row
    import ray

    assert not ray.is_initialized()
