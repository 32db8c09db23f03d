"""Offloading at one split point: the host runs the head, one secondary runs the tail.

The host computes layers [0, cut), sends the whole map at `cut` to the chosen secondary, which
computes [cut, end) and returns the output. Unless the scenario fixes them, the cut (any layer
boundary, the fully connected part included) and the secondary are chosen to minimise the
predicted latency: head + transfer + tail + return. A cut at the end means no offloading.
"""

from __future__ import annotations

from halp.cluster import Cluster
from halp.errors import PlanError
from halp.latency.model import LatencyModel
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
    predicted, best_cut, best_device = min(
        (predicted_s(graph, latency, host, d, c), c, d) for d in devices for c in cuts)
    b = PlanBuilder(graph, "offload", model, host, cluster.names)
    source = b.input()
    if best_cut > 0:
        source = b.compute(host, 0, best_cut, graph.full(best_cut), [source])
    if best_cut < end:
        b.segments.append((best_cut, end))
        t = b.transfer(host, best_device, best_cut, graph.full(best_cut), [source])
        c = b.compute(best_device, best_cut, end, graph.full(end), [t])
        source = b.transfer(best_device, host, end, graph.full(end), [c])
    return b.build(source, cut=best_cut, device=best_device if best_cut < end else host,
                   predicted_s=predicted)
