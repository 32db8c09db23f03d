"""Small real clusters and models for tests (no scenario file needed)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from halp.cluster import Cluster, Device
from halp.latency.model import LatencyModel
from halp.latency.profile import load_profile
from halp.model.zoo import ModelSpec, build_model
from halp.network import BandwidthTrace

REQUIRE_ENV = "HALP_REQUIRE_EMU"  # set by .ci/run: a skipped emulator, SSH or Ray test is a failure


def skip_or_fail(reason: str | None) -> None:
    """Skip a test that cannot run here, or fail it where it must run (HALP_REQUIRE_EMU=1)."""
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def ray_missing() -> str | None:
    """Why the Ray tests cannot run here, or None. Ray is the project's `ray` extra, which
    `make setup` (and so CI) installs."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return "Ray tests need ray: pip install -e '.[ray]'"
    return None


def require_ray() -> None:
    """Skip the test when Ray is not installed, or fail it under HALP_REQUIRE_EMU=1."""
    skip_or_fail(ray_missing())


def cluster(speeds: list[float], bandwidth_bps: float | list[float] = 100e6, network: str = "star",
            profile: str = "x86-base") -> tuple[Cluster, LatencyModel]:
    """Device 0 is the host; the others are secondaries d1, d2, ... with the given speeds. The
    profile is a frozen measurement by default: `this-machine` is measured again whenever it
    goes stale, and a planner's choice on a small graph can turn on a few percent."""
    prof = load_profile(profile)
    names = [f"d{i}" for i in range(len(speeds))]
    devices = tuple(Device(n, prof, s) for n, s in zip(names, speeds, strict=True))
    rates = bandwidth_bps if isinstance(bandwidth_bps, list) else [bandwidth_bps] * (len(speeds) - 1)
    bw = dict(zip(names[1:], rates, strict=True))
    c = Cluster(devices, "d0", network, bw, {k: BandwidthTrace.constant(v) for k, v in bw.items()})
    return c, LatencyModel(c)


def users_model(folder: Path, source: str, size: int) -> ModelSpec:
    """A custom model only `folder` has: `source` (defining `build()`) as `net.py`, and its
    weights, which no seed gives, as `trained.pt`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "net.py").write_text(source)
    spec = ModelSpec("custom", resolution=size, factory=f"{folder / 'net.py'}:build",
                     input_shape=(3, size, size))
    model = build_model(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(-1.0)
    torch.save(model.state_dict(), folder / "trained.pt")
    return dataclasses.replace(spec, weights=str(folder / "trained.pt"))
