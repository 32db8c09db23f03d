"""The classifier split: a linear layer's output features shared among devices.

After the spatial part the host holds the whole flat map. A linear layer reads all of its input,
but each output feature reads only its own row of the weights, so devices can compute disjoint
ranges of features: the host sends the whole map to each secondary that takes a range (on a star
at once, on a shared channel one after another), computes its own range meanwhile and gathers
the ranges, exactly as a row segment (`halp.methods.segment`). On VGG-16 the first classifier
layer (25088 x 4096 weights, ~15% of the model's time on one device) is otherwise the longest
op of a host that runs it alone while the secondaries idle.

Each linear layer, with the elementwise layers after it, is one block; a block is shared only
when that is predicted faster than the host alone. The ranges start from shares proportional to
device speed and are refined by coordinate descent with halving steps, as HALP's splits.
"""

from __future__ import annotations

from dataclasses import dataclass

from halp.cluster import Cluster
from halp.latency.model import LatencyModel
from halp.methods.common import descend, host_first, proportional, rate
from halp.methods.segment import Layout, segment_time
from halp.model.graph import LINEAR, ModelGraph, Range


@dataclass(frozen=True)
class ClassifierSplit:
    """Block [start, stop) of the classifier and who computes which output features."""

    start: int
    stop: int
    layout: Layout
    time_s: float

    @property
    def shared(self) -> bool:
        return bool(self.layout.secondary)


def blocks(graph: ModelGraph, start: int) -> list[tuple[int, int]]:
    """Layers [start, end) cut before every linear layer (what precedes the first one, such as
    a flatten, is a block of its own)."""
    end = len(graph)
    cuts = [start, *(layer.index for layer in graph.layers[start:end]
                     if layer.kind == LINEAR and layer.index > start), end]
    return [(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


def split_block(graph: ModelGraph, cluster: Cluster, latency: LatencyModel, start: int,
                stop: int) -> ClassifierSplit:
    """The fastest sharing of block [start, stop)'s output features, the host alone included."""
    height = graph.height(stop)
    alone = Layout((), (Range(0, height),))
    best = ClassifierSplit(start, stop, alone,
                           segment_time(graph, cluster, latency, alone, start, stop))
    order = sorted(cluster.secondaries, key=lambda d: -cluster.bandwidth_bps[d])
    if graph.layers[start].kind != LINEAR or not order:
        return best
    whole = Range(0, graph.height(start))

    def arrange(points: list[int]) -> Layout:
        """Host [0, p0), secondary k [p_k, p_k+1), the last one up to the height."""
        edges = [*points, height]
        parts = tuple((d, whole, Range(edges[k], edges[k + 1])) for k, d in enumerate(order)
                      if edges[k + 1] > edges[k])
        return Layout(parts, (Range(0, points[0]),) if points[0] > 0 else ())

    def cost(points: list[int]) -> float:
        return segment_time(graph, cluster, latency, arrange(points), start, stop)

    counts = proportional(height, [rate(latency, d, graph, start, stop) for d in (cluster.host, *order)])
    points = [top for top, _ in host_first(counts)]
    points, t = descend(cost, points, height, max(1, height // 4))
    if t < best.time_s:
        best = ClassifierSplit(start, stop, arrange(points), t)
    return best


def split_classifier(graph: ModelGraph, cluster: Cluster, latency: LatencyModel,
                     start: int) -> list[ClassifierSplit]:
    """Every block of layers [start, end), each shared or left to the host."""
    return [split_block(graph, cluster, latency, a, b) for a, b in blocks(graph, start)]
