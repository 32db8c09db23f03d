"""Predicts op durations on a cluster: compute from device profiles, transfers from links.

Compute: the sum of the profile's per-layer predictions over a fused run (on exactly the
rows each layer computes, halo included), plus one op overhead, divided by the device's speed.
Transfer: one message overhead plus bytes x 8 / bandwidth plus the propagation delay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from halp.model.graph import ModelGraph, Region

if TYPE_CHECKING:
    from halp.cluster import Cluster


class LatencyModel:
    """Stateless but for a memo of fused-run predictions (planners ask the same ones often)."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self._memo: dict[tuple, float] = {}

    def compute_s(self, device: str, graph: ModelGraph, start: int, stop: int, out: Region) -> float:
        key = (device, id(graph), start, stop, out)
        hit = self._memo.get(key)
        if hit is None:
            dev = self.cluster.device(device)
            total = dev.profile.op_overhead_s
            for layer, held, produced in graph.layer_regions(start, stop, out):
                total += dev.profile.layer_s(layer, held, produced)
            hit = self._memo[key] = total / dev.speed
        return hit

    def gather_s(self, device: str, nbytes: float) -> float:
        dev = self.cluster.device(device)
        return dev.profile.copy_s_per_byte * nbytes / dev.speed

    def message_s(self) -> float:
        return self.cluster.device(self.cluster.host).profile.message_overhead_s

    def transfer_s(self, src: str, dst: str, nbytes: float, bandwidth_bps: float | None = None) -> float:
        bps = self.cluster.bandwidth(src, dst) if bandwidth_bps is None else bandwidth_bps
        return self.message_s() + nbytes * 8.0 / bps + self.cluster.delay_s
