"""Predicts op durations on a cluster: compute from device profiles, transfers from links.

Compute: the sum of the profile's per-layer predictions over a fused run (on exactly the
rows each layer computes, halo included), plus one op overhead, divided by the device's speed.
Transfer: the message cost (one overhead, plus signing and checking each byte: the host's
profile, `halp.latency.hop`) plus the block's bits on the wire (`halp.network.wire_bits`:
frames included) over the bandwidth, plus the propagation delay.

Planners ask for thousands of row slices, so full-width slices take a fast path: a profile's
features are linear in the rows a layer reads and writes, so each layer's cost is
`fixed + per_row_in * rows_in + per_row_out * rows_out`, precomputed once per device and model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from halp.model.graph import RESHAPE, LayerSpec, ModelGraph, Region, region
from halp.network import wire_bits

if TYPE_CHECKING:
    from halp.cluster import Cluster
    from halp.latency.profile import Profile


class LatencyModel:
    """Stateless but for memos of predictions (planners ask the same ones often)."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self._memo: dict[tuple, float] = {}
        self._rows: dict[tuple, list[list[tuple[float, float, float]]]] = {}

    def at(self, cluster: Cluster) -> LatencyModel:
        """The model of `cluster`, the same devices at other speeds or bandwidths: it shares the
        per-row cost tables (they depend on the profiles only), so re-planning every decision
        of a changing cluster does not rebuild them."""
        other = LatencyModel(cluster)
        if [d.profile for d in cluster.devices] == [d.profile for d in self.cluster.devices] \
                and cluster.names == self.cluster.names:
            other._rows = self._rows
        return other

    def compute_s(self, device: str, graph: ModelGraph, start: int, stop: int, out: Region) -> float:
        key = (device, id(graph), start, stop, out)
        hit = self._memo.get(key)
        if hit is None:
            dev = self.cluster.device(device)
            if out.cols.start == 0 and out.cols.stop == graph.width(stop) and not out.empty:
                total = self._rows_s(device, graph, start, stop, out.rows.start, out.rows.stop)
            else:
                total = sum(dev.profile.layer_s(layer, held, produced)
                            for layer, held, produced in graph.layer_regions(start, stop, out))
            hit = self._memo[key] = (dev.profile.op_overhead_s + total) / dev.speed
        return hit

    def _row_costs(self, device: str, graph: ModelGraph) -> list[list[tuple[float, float, float]]]:
        """Per stage, per op (one for a single op, one per op of a block): (fixed, per input
        row, per output row) seconds at full width."""
        key = (device, id(graph))
        if key not in self._rows:
            profile = self.cluster.device(device).profile
            self._rows[key] = [[_op_row_cost(profile, node.spec) for node in layer.nodes]
                               if layer.nodes else [_op_row_cost(profile, layer)]
                               for layer in graph.layers]
        return self._rows[key]

    def _rows_s(self, device: str, graph: ModelGraph, start: int, stop: int, r0: int, r1: int) -> float:
        costs = self._row_costs(device, graph)
        total = 0.0
        a, b = r0, r1
        for layer in reversed(graph.layers[start:stop]):
            if layer.nodes:
                (a, b), sizes = graph.block_op_rows(layer, (a, b))
                total += sum(fixed + per_in * rows_in + per_out * rows_out
                             for (fixed, per_in, per_out), (rows_in, rows_out)
                             in zip(costs[layer.index], sizes, strict=True) if rows_out)
                continue
            fixed, per_in, per_out = costs[layer.index][0]
            rows_out = b - a
            if layer.spatial:
                k, s, p = layer.kernel[0], layer.stride[0], layer.padding[0]
                if (k, s, p) != (1, 1, 0):
                    a, b = max(0, a * s - p), min(layer.in_height, (b - 1) * s - p + k)
            else:
                a, b = 0, layer.in_height
            total += fixed + per_in * (b - a) + per_out * rows_out
        return total

    def gather_s(self, device: str, nbytes: float) -> float:
        dev = self.cluster.device(device)
        return dev.profile.copy_s_per_byte * nbytes / dev.speed

    def message_terms(self) -> tuple[float, float]:
        """(seconds per block, seconds per byte) a block costs beyond its bits on the wire."""
        profile = self.cluster.device(self.cluster.host).profile
        return profile.message_overhead_s, profile.message_s_per_byte

    def message_s(self, nbytes: float = 0.0) -> float:
        overhead, per_byte = self.message_terms()
        return overhead + per_byte * nbytes

    def transfer_s(self, src: str, dst: str, nbytes: float, bandwidth_bps: float | None = None) -> float:
        bps = self.cluster.bandwidth(src, dst) if bandwidth_bps is None else bandwidth_bps
        return self.message_s(nbytes) + wire_bits(nbytes) / bps + self.cluster.delay_s


def _op_row_cost(profile: Profile, layer: LayerSpec) -> tuple[float, float, float]:
    """(fixed, per input row, per output row) seconds of one op at full width: a profile's
    features are linear in the rows an op reads and writes."""
    if layer.kind == RESHAPE:
        return (0.0, 0.0, 0.0)
    if not layer.spatial:  # reads its whole input whatever rows it produces
        full_in = region((0, layer.in_height), (0, layer.in_width))
        w_out = (0, layer.out_width)
        one = profile.layer_s(layer, full_in, region((0, 1), w_out))
        per_out = profile.layer_s(layer, full_in, region((0, 2), w_out)) - one
        return (one - per_out, 0.0, per_out)
    # The columns a full-width output reads: not always all of them (a 1x1 convolution of
    # stride 2 on an even width skips the last one), and the slow path counts what is read.
    cols = layer.needed(region((0, 1), (0, layer.out_width))).cols
    w_in, w_out = (cols.start, cols.stop), (0, layer.out_width)
    base = profile.layer_s(layer, region((0, 0), w_in), region((0, 1), w_out))
    one_in = profile.layer_s(layer, region((0, 1), w_in), region((0, 1), w_out))
    two_out = profile.layer_s(layer, region((0, 0), w_in), region((0, 2), w_out))
    per_in, per_out = one_in - base, two_out - base
    return (base - per_out, per_in, per_out)
