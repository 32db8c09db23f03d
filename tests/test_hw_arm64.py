"""The arm64 device of this machine (`make arm64-device`, hw/README.md "An arm64 device on this
machine") runs what a Raspberry Pi user runs: `make arm64-check` (`hw/arm64_check.py`).

Runs only where the device's image exists (`/var/cache/halp-arm64/rootfs`, built by `make
arm64-device`, root only) and skips otherwise, even under HALP_REQUIRE_EMU=1: CI cannot afford
the build (a Debian arm64 userland, 2.8 GB of aarch64 wheels) nor the half hour the emulated
check takes. `make test` leaves it out (pytest's addopts say `-m "not arm64"`); `make
arm64-check` runs the check and `pytest -m arm64` this test. It starts the device's sshd if
needed and leaves it as it found it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.arm64, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("HALP_ARM64_DIR", "/var/cache/halp-arm64"))


def test_arm64_device_runs_what_a_pi_user_runs() -> None:
    if not (CACHE / "rootfs" / ".halp-built").is_file():
        pytest.skip(f"no arm64 device image in {CACHE} (make arm64-device builds it)")
    if os.geteuid() != 0:
        pytest.skip("the arm64 device needs root")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    device = [sys.executable, "-m", "hw.arm64_device"]
    was_up = subprocess.run([*device, "status"], cwd=REPO, env=env,
                            capture_output=True).returncode == 0
    try:
        up = subprocess.run([*device, "up"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=3600)
        assert up.returncode == 0, up.stderr
        check = subprocess.run([sys.executable, "-m", "hw.arm64_check"], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=3 * 3600)
        last = (check.stdout.strip().splitlines() or [""])[-1]
        assert check.returncode == 0, check.stderr[-3000:]
        assert last.startswith("arm64 device: ") and " requests exact" in last, last
        assert int(last.split()[2]) > 0, last
    finally:
        if not was_up:
            subprocess.run([*device, "down"], cwd=REPO, env=env, capture_output=True, timeout=60)
