"""MoDNN (Mao et al., 2017): a biased one-dimensional partition, layer by layer.

For every windowed layer (a convolution or pooling, fused with the elementwise layers after it)
the host splits the layer's output rows among all devices in proportion to their speed on
that layer, sends each secondary the input rows its share needs (its halo included), computes
its own share, and gathers the whole output map before the next layer: a scatter and a gather
per layer. Fully connected layers run on the host (MoDNN also splits them sparsely; with one
host holding the flattened map that would only add transfers).
"""

from __future__ import annotations

from halp.cluster import Cluster
from halp.latency.model import LatencyModel
from halp.methods.common import PlanBuilder, bounds, proportional
from halp.model.graph import ModelGraph
from halp.plan import Plan


def units(graph: ModelGraph) -> list[tuple[int, int]]:
    """Layer runs [a, b): one windowed layer and the elementwise layers that follow it."""
    cuts = graph.cut_points()
    return list(zip(cuts, cuts[1:], strict=False))


def plan(graph: ModelGraph, cluster: Cluster, latency: LatencyModel, model: str) -> Plan:
    host = cluster.host
    b = PlanBuilder(graph, "modnn", model, host, cluster.names)
    source = b.input()
    devices = [host, *cluster.secondaries]
    for start, stop in units(graph):
        b.segments.append((start, stop))
        speeds = [1.0 / max(latency.compute_s(d, graph, start, stop, graph.full(stop)), 1e-12)
                  for d in devices]
        shares = bounds(proportional(graph.height(stop), speeds))
        sends = []
        for device, (r0, r1) in zip(devices[1:], shares[1:], strict=True):
            if r1 > r0:
                need = graph.rows_needed(start, stop, graph.rows(stop, r0, r1))
                sends.append((device, b.transfer(host, device, start, need, [source]), (r0, r1)))
        computes = [(d, b.compute(d, start, stop, graph.rows(stop, *rows), [t]), rows)
                    for d, t, rows in sends]
        pieces = []
        if shares[0][1] > shares[0][0]:
            pieces.append(b.compute(host, start, stop, graph.rows(stop, *shares[0]), [source]))
        for device, c, rows in computes:
            pieces.append(b.transfer(device, host, stop, graph.rows(stop, *rows), [c]))
        source = b.gather(host, stop, graph.full(stop), pieces)
    end = b.segments[-1][1] if b.segments else 0
    return b.build(b.host_tail(end, source))
