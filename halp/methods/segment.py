"""Who computes which output rows of a segment, and how long the segment takes.

Shared by HALP's row segments (`halp.methods.halp`), the classifier split
(`halp.methods.classifier`) and the learned splits (`halp.methods.erl`): the host holds the
segment's whole input; each secondary receives the input rows it needs, computes its output
rows and returns them; the host computes the rest meanwhile and gathers (see `segment_time`).
"""

from __future__ import annotations

from dataclasses import dataclass

from halp.cluster import SHARED, Cluster
from halp.latency.model import LatencyModel
from halp.model.graph import ModelGraph, Range


@dataclass(frozen=True)
class Layout:
    """Who computes which output rows of a segment."""

    secondary: tuple[tuple[str, Range, Range], ...]  # (device, input rows sent, output rows)
    host: tuple[Range, ...]  # output ranges the host computes


def layout(graph: ModelGraph, start: int, stop: int, order: tuple[str, ...],
           blocks: tuple[tuple[int, int], ...]) -> Layout:
    height = graph.height(stop)
    parts = []
    for device, (x0, x1) in zip(order, blocks, strict=True):
        if x1 <= x0:
            continue
        out = Range(*graph.row_computable(start, stop, (x0, x1)))
        if out.size == 0:
            continue
        sent = Range(*graph.row_needed(start, stop, out))
        parts.append((device, sent, out))
    host: list[Range] = []
    at = 0
    for _, _, out in sorted(parts, key=lambda p: p[2].start):
        if out.start > at:
            host.append(Range(at, out.start))
        at = max(at, out.stop)
    if at < height:
        host.append(Range(at, height))
    return Layout(tuple(parts), tuple(host))


def segment_time(graph: ModelGraph, cluster: Cluster, latency: LatencyModel, lay: Layout,
                 start: int, stop: int) -> float:
    host = cluster.host
    host_s = sum(latency.compute_s(host, graph, start, stop, graph.rows(stop, r.start, r.stop))
                 for r in lay.host)
    shared = cluster.network == SHARED
    sent_at = 0.0
    returns: list[tuple[float, float]] = []
    for device, sent, out in lay.secondary:
        tx = latency.transfer_s(host, device, graph.region_bytes(start, graph.rows(start, *sent)))
        sent_at = sent_at + tx if shared else tx
        done = sent_at + latency.compute_s(device, graph, start, stop, graph.rows(stop, *out))
        back = latency.transfer_s(device, host, graph.region_bytes(stop, graph.rows(stop, *out)))
        returns.append((done, back))
    if shared:
        channel, finish = sent_at, 0.0
        for done, back in sorted(returns):
            channel = max(channel, done) + back
            finish = channel
    else:
        finish = max((done + back for done, back in returns), default=0.0)
    gather = latency.gather_s(host, graph.region_bytes(stop, graph.full(stop))) if lay.secondary else 0.0
    return max(host_s, finish) + gather
