"""Tiny, hand-checkable cases for the simulator tests: a 7-layer CNN on 8x8 inputs, a
hand-written device profile with round numbers, and clusters built from it.

With this profile a compute op costs 1 ms of overhead plus 10 ms per conv layer, 2 ms per pool
and 3 ms per linear layer (ReLU and flatten are free), divided by the device's speed; a gather
costs 1 us per byte; a message costs 0.5 ms of overhead on top of bytes / bandwidth + delay.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from halp.cluster import Cluster, Device
from halp.latency.profile import load_profile
from halp.model.graph import ModelGraph
from halp.model.trace import trace_model
from halp.network import BandwidthTrace
from halp.scenario import (
    DeepthingsMethod,
    HalpMethod,
    ModnnMethod,
    OffloadMethod,
    StandaloneMethod,
)

REPO = Path(__file__).resolve().parents[1]
# Every static method, as a scenario's method config (DeepThings on a 2x2 grid for tiny maps).
METHODS = [StandaloneMethod(name="standalone"), HalpMethod(name="halp"), HalpMethod(name="equal"),
           ModnnMethod(name="modnn"), DeepthingsMethod(name="deepthings", grid=(2, 2)),
           OffloadMethod(name="offload")]

PROFILE = """\
name: tiny
provenance: {kind: hand-written, for: simulator tests}
op_overhead_s: 0.001
message_overhead_s: 0.0005
message_s_per_byte: 1.0e-6
copy_s_per_byte: 1.0e-6
coefficients:
  conv: {intercept_s: 0.010}
  elementwise: {intercept_s: 0.0}
  pool: {intercept_s: 0.002}
  linear: {intercept_s: 0.003}
"""


def tiny_module(height: int = 8) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * (height // 2) * 4, 3),
    )


def tiny_graph(height: int = 8) -> ModelGraph:
    """Boundaries: 0 input (1x8x8), 4 after conv-relu-conv-relu (2xHx8), 7 the output (3)."""
    return trace_model(tiny_module(height), (1, height, 8), "tiny")


def write_profile(folder: Path) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(PROFILE)
    return path


def cluster(folder: Path, speeds: dict[str, float], bandwidth_bps: float | dict[str, float],
            network: str = "star", delay_s: float = 0.0,
            traces: dict[str, BandwidthTrace] | None = None) -> Cluster:
    """The first device of `speeds` is the host; every device runs the tiny profile."""
    profile = load_profile(str(write_profile(folder)))
    names = list(speeds)
    host = names[0]
    bw = bandwidth_bps if isinstance(bandwidth_bps, dict) else {n: bandwidth_bps for n in names[1:]}
    traces = dict(traces or {})
    for name in names[1:]:
        traces.setdefault(name, BandwidthTrace.constant(bw[name]))
    return Cluster(devices=tuple(Device(n, profile, speeds[n]) for n in names), host=host,
                   network=network, bandwidth_bps={n: traces[n].rate_at(0.0) for n in names[1:]},
                   traces=traces, delay_s=delay_s)
