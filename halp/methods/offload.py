"""Offloading at one split point: the host runs the head, one secondary runs the tail.

The host computes layers [0, cut), sends the whole map at `cut` to the chosen secondary, which
computes [cut, end) and returns the output. Unless the scenario fixes them, the cut (any layer
boundary, the fully connected part included) and the secondary are chosen to minimise the
predicted latency: head + transfer + tail + return. A cut at the end means no offloading. When
devices have memory limits, the fastest (cut, secondary) whose plan fits them all is chosen.
"""

from __future__ import annotations

from halp.cluster import Cluster
from halp.errors import PlanError
from halp.latency.model import LatencyModel
from halp.memory import fits
from halp.methods.common import PlanBuilder
from halp.model.graph import ModelGraph
from halp.plan import Plan


def predicted_s(graph: ModelGraph, latency: LatencyModel, host: str, device: str, cut: int) -> float:
    end = len(graph)
    head = latency.compute_s(host, graph, 0, cut, graph.full(cut)) if cut > 0 else 0.0
    if cut >= end:
        return head
    there = latency.transfer_s(host, device, graph.region_bytes(cut, graph.full(cut)))
    tail = latency.compute_s(device, graph, cut, end, graph.full(end))
    back = latency.transfer_s(device, host, graph.region_bytes(end, graph.full(end)))
    return head + there + tail + back


def plan(graph: ModelGraph, cluster: Cluster, latency: LatencyModel, model: str,
         cut: int | None = None, device: str | None = None) -> Plan:
    host, end = cluster.host, len(graph)
    if cut is not None and cut > end:
        raise PlanError(f"method.cut {cut} is past the last layer boundary ({end}) of {graph.name}")
    devices = [device] if device else cluster.secondaries
    cuts = [cut] if cut is not None else list(range(end + 1))
    if not devices:
        devices, cuts = [host], [end]
    candidates = sorted((predicted_s(graph, latency, host, d, c), c, d) for d in devices for c in cuts)
    if cluster.memory_limited:  # the fastest split whose plan fits every device, if any does
        for predicted, c, d in candidates:
            built = build(graph, cluster, model, c, d, predicted)
            if fits(built, graph, cluster):
                return built
    predicted, best_cut, best_device = candidates[0]
    return build(graph, cluster, model, best_cut, best_device, predicted)


def build(graph: ModelGraph, cluster: Cluster, model: str, cut: int, device: str,
          predicted: float) -> Plan:
    """The plan that offloads layers [cut, end) to `device`."""
    host, end = cluster.host, len(graph)
    b = PlanBuilder(graph, "offload", model, host, cluster.names)
    source = b.input()
    if cut > 0:
        source = b.compute(host, 0, cut, graph.full(cut), [source])
    if cut < end:
        b.segments.append((cut, end))
        t = b.transfer(host, device, cut, graph.full(cut), [source])
        c = b.compute(device, cut, end, graph.full(end), [t])
        source = b.transfer(device, host, end, graph.full(end), [c])
    return b.build(source, cut=cut, device=device if cut < end else host,
                   predicted_s=predicted)
