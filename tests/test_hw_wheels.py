"""Pieces of the arm64 path that need no device: which wheels of a `--wheels` folder a device
gets, and how a profile knows it was measured under emulation."""

from __future__ import annotations

import platform

import pytest

from halp.latency import timing
from hw.install import fits


@pytest.mark.parametrize(("name", "machine", "expected"), [
    ("torch-2.13.0-cp311-cp311-manylinux_2_28_aarch64.whl", "aarch64", True),
    ("torch-2.13.0-cp311-cp311-manylinux_2_28_aarch64.whl", "x86_64", False),
    ("numpy-2.3.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "x86_64", True),
    ("numpy-2.3.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "aarch64", False),
    ("pyyaml-6.0-py3-none-any.whl", "aarch64", True),
    ("tzdata-2026.6-py2.py3-none-any.whl", "x86_64", True),
])
def test_a_device_gets_the_wheels_of_its_architecture(name, machine, expected):
    assert fits(name, machine) is expected


def test_emulation_is_an_arm_python_on_an_x86_cpu(monkeypatch, tmp_path):
    x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)\n"
    arm = "processor\t: 0\nBogoMIPS\t: 108.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n"
    real_read = timing.Path.read_text

    def cpuinfo(text: str):
        def read(self, *args, **kwargs):
            return text if str(self) == "/proc/cpuinfo" else real_read(self, *args, **kwargs)
        return read

    for machine, text, emulated in (("aarch64", x86, True), ("aarch64", arm, False),
                                    ("x86_64", x86, False), ("x86_64", arm, True)):
        monkeypatch.setattr(platform, "machine", lambda m=machine: m)
        monkeypatch.setattr(timing.Path, "read_text", cpuinfo(text))
        found = timing.emulation()
        assert (found is not None) is emulated, (machine, found)
        if emulated and machine == "aarch64":
            assert found.startswith("qemu-user: aarch64") and "Xeon" in found
