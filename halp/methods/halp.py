"""HALP: segments split by rows, overlapping zones on the host, transfers hidden behind compute.

The network's spatial part is cut into segments [a, b). At the start of a segment the host holds
the whole input map (H rows). It hands secondary k (in send order) one contiguous block of
input rows [s_k, e_k), no halo, the blocks in send order down the map and not overlapping
(0 <= s_1 <= e_1 <= s_2 <= ... <= e_m <= H). Secondary k computes every output row its block
alone determines, C_k = computable(block_k); the host computes all other output rows: the
rows above, between and below the blocks, the overlapping zones included, from the whole input
it holds. With the host's share in the middle of the map its range covers the zones on both
sides in one piece (one pyramid of halo rows, not two). The host sends the blocks while it
computes: on a star each secondary's link carries its own block at once; on a shared channel
the blocks go one after another, in the send order.

Formulation (per segment, time from the moment the host holds the input):

    send_k   = tx(bytes(block_k), link_k)                         star: links in parallel
    send_k   = sum_{j <= k} tx(bytes(block_j), link_j)            shared: one channel
    done_k   = send_k + comp_k(C_k) + tx(bytes(C_k), link_k)      compute, then return
    host     = sum over host ranges R of comp_host(R)             runs during the sends
    T(p)     = max(host, max_k done_k) + gather(bytes of the output)

    minimise T over the blocks, and over send orders.

On a shared channel the returns queue behind each other (first come, first served). The search
runs over the output rows each secondary computes (its block is the input rows those need;
where two neighbours' blocks would overlap, the host computes the zone between them). It
starts from shares proportional to device speed, with the host on top and with the host in the
middle, and is refined by coordinate descent with halving steps (T is piecewise constant in
the edges, so gradients do not help). Segment cuts are chosen
by dynamic programming over the cut points: best(j) = min_i best(i) + T*(cut_i, cut_j), each
segment costed at its optimised split. After the spatial part each linear layer's output
features are shared the same way where that is predicted faster (`halp.methods.classifier`;
`split_classifier: false` leaves the classifier to the host, as published). `equal` gives
every device an equal share of each segment's input rows, blind to speed, with segments chosen
by the same programme over its own splits, among segments shallow enough that every device's
share computes some rows (HALP's segments can be so deep that an equal share of the input
determines no output row: `equal` would quietly be stand-alone); the host runs the rest.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

from halp.cluster import Cluster
from halp.errors import PlanError
from halp.latency.model import LatencyModel
from halp.methods.classifier import split_classifier
from halp.methods.common import PlanBuilder, descend, host_first, proportional, rate
from halp.methods.segment import Layout, layout, segment_time
from halp.model.graph import ModelGraph
from halp.plan import Plan


@dataclass(frozen=True)
class Split:
    """How one segment is shared: secondaries in send order with their input blocks."""

    start: int
    stop: int
    order: tuple[str, ...]
    blocks: tuple[tuple[int, int], ...]
    time_s: float


def _pairs(edges: list[int]) -> tuple[tuple[int, int], ...]:
    """Blocks from their edges [s1, e1, s2, e2, ...]; a gap between two blocks is the host's."""
    return tuple((edges[i], edges[i + 1]) for i in range(0, len(edges), 2))


def _starts(counts: list[int], height: int, wide: bool = False) -> list[list[int]]:
    """Edges to start the descent from, for shares `counts` (host first, then the send order):
    the host on top of the map, and the host in the middle (its range then covers the zone
    between the two blocks beside it in one piece, one halo fewer to compute). `wide`: also
    from the host with half and one and a half times its share, since the descent can stall
    where a move must take rows from two devices at once: on VGG-16's segment 17-24 (this
    machine's profile of 2026-12-06, three equal devices) it stopped 5.5% above the best split
    of all, which these starts reach."""
    if wide:
        return [edges for share in (counts, *_host_scaled(counts, height))
                for edges in _starts(share, height)]
    starts = [[e for block in host_first(counts) for e in block]]
    m = len(counts) - 1
    if m >= 2:
        upper = m // 2  # secondaries above the host
        shares = [*counts[1: upper + 1], counts[0], *counts[upper + 1:]]
        at, edges = 0, []
        for k, size in enumerate(shares):
            if k != upper:
                edges += [at, at + size]
            at += size
        edges[-1] = height
        starts.append(edges)
    return starts


def _host_scaled(counts: list[int], height: int) -> list[list[int]]:
    """`counts` with the host's share halved and grown by half, the secondaries' shares evened
    out to fill the map."""
    scaled = []
    for factor in (0.5, 1.5):
        host = min(height, round(counts[0] * factor))
        rest = proportional(height - host, [float(c) + 1e-9 for c in counts[1:]])
        scaled.append([host, *rest])
    return scaled


def input_blocks(graph: ModelGraph, start: int, stop: int, edges: list[int]) -> tuple[tuple[int, int], ...]:
    """The input blocks that let each secondary compute its output rows [e0, e1), [e2, e3), ...
    (in send order down the map). Where two neighbours would need the same input rows, the
    overlap is split at its middle: each then computes a little less, and the host computes
    the zone between them. An empty range is an empty block."""
    needed = [graph.row_needed(start, stop, (a, b)) if b > a else None for a, b in _pairs(edges)]
    blocks, at = [], 0
    for k, rows in enumerate(needed):
        if rows is None:
            blocks.append((at, at))
            continue
        x0, x1 = max(rows[0], at), rows[1]
        below = next((n for n in needed[k + 1:] if n is not None), None)
        if below is not None and below[0] < x1:
            x1 = (below[0] + x1) // 2
        at = max(x0, x1)
        blocks.append((x0, at))
    return tuple(blocks)


def optimise_split(graph: ModelGraph, cluster: Cluster, latency: LatencyModel, start: int, stop: int,
                   effort: int = 2) -> Split:
    """The best split of segment [start, stop) found by coordinate descent (see module doc).

    The descent moves the edges of the *output* rows each secondary computes (its input block
    follows, `input_blocks`): one output row is the smallest change that matters, where an
    input edge would sit on plateaus of a pooling's stride. It moves one edge, two touching
    edges together, or, when none of those helps, any two edges at once (the time is a
    maximum over devices, and lowering it can take rows from two of them together), with
    halving steps, from the host-on-top and the host-in-the-middle layouts. `effort` 1 is the
    quick pass used while choosing cuts (one send order, coarse steps, no two-edge moves); 2
    tries several send orders down to single rows."""
    secondaries = cluster.secondaries
    height = graph.height(stop)

    def cost(order: tuple[str, ...], edges: list[int]) -> float:
        blocks = input_blocks(graph, start, stop, edges)
        return segment_time(graph, cluster, latency, layout(graph, start, stop, order, blocks),
                            start, stop)

    if not secondaries:
        t = cost((), [])
        return Split(start, stop, (), (), t)
    orders = _orders(cluster, secondaries)[: 1 if effort <= 1 else None]
    step = max(1, height // 4) if effort > 1 else max(1, height // 8)
    last = 1 if effort > 1 else max(1, height // 32)
    best: Split | None = None
    for order in orders:
        weights = [rate(latency, d, graph, start, stop) for d in (cluster.host, *order)]
        for edges in _starts(proportional(height, weights), height, wide=effort > 1):
            edges, t = descend(functools.partial(cost, order), edges, height, step, last,
                               together=True, pairs=effort > 1)
            candidate = Split(start, stop, order, input_blocks(graph, start, stop, edges), t)
            if best is None or candidate.time_s < best.time_s:
                best = candidate
    assert best is not None
    # The host alone is always a candidate (all blocks empty).
    nothing = [height] * (2 * len(best.order))
    alone = cost(best.order, nothing)
    if alone < best.time_s:
        best = Split(start, stop, best.order, input_blocks(graph, start, stop, nothing), alone)
    return best


def equal_split(graph: ModelGraph, cluster: Cluster, latency: LatencyModel, start: int, stop: int) -> Split:
    order = tuple(cluster.secondaries)
    height = graph.height(start)
    return timed_split(graph, cluster, latency, start, stop, order,
                       host_first(proportional(height, [1.0] * (len(order) + 1))))


def timed_split(graph: ModelGraph, cluster: Cluster, latency: LatencyModel, start: int, stop: int,
                order: tuple[str, ...], blocks: tuple[tuple[int, int], ...]) -> Split:
    """The split of segment [start, stop) that sends `blocks` in `order`, with its time."""
    t = segment_time(graph, cluster, latency, layout(graph, start, stop, order, blocks), start, stop)
    return Split(start, stop, order, blocks, t)


def _orders(cluster: Cluster, secondaries: list[str]) -> list[tuple[str, ...]]:
    """Send orders to try, the most promising first (fast links and fast devices early). On a
    star the order still decides which rows each secondary gets (blocks follow it down the map)."""
    first = tuple(sorted(secondaries, key=lambda d: (-cluster.bandwidth_bps[d], -cluster.device(d).speed)))
    if len(secondaries) <= 3:
        return list(dict.fromkeys([first, *itertools.permutations(secondaries)]))
    by_bandwidth = tuple(sorted(secondaries, key=lambda d: -cluster.bandwidth_bps[d]))
    by_speed = tuple(sorted(secondaries, key=lambda d: -cluster.device(d).speed))
    return list(dict.fromkeys([first, tuple(secondaries), by_bandwidth, by_speed]))


def choose_cuts(graph: ModelGraph, cluster: Cluster, latency: LatencyModel,
                max_layers: int | None = None,
                cost: Callable[[int, int], float] | None = None) -> list[int]:
    """Segment boundaries by dynamic programming over the graph's cut points, each segment
    [a, b) costed by `cost(a, b)` (default: the time of its optimised split; `math.inf` rules
    a segment out, which a segment between neighbouring cut points must never be)."""
    cuts = graph.cut_points()
    timed = cost or (lambda a, b: optimise_split(graph, cluster, latency, a, b, effort=1).time_s)
    best: dict[int, tuple[float, list[int]]] = {0: (0.0, [cuts[0]])}
    for j in range(1, len(cuts)):
        options = []
        for i in range(j):
            if max_layers is not None and cuts[j] - cuts[i] > max_layers and i < j - 1:
                continue
            t = timed(cuts[i], cuts[j])
            options.append((best[i][0] + t, [*best[i][1], cuts[j]]))
        best[j] = min(options, key=lambda o: o[0])
    return best[len(cuts) - 1][1]


def equal_cost(graph: ModelGraph, cluster: Cluster, latency: LatencyModel) -> Callable[[int, int], float]:
    """A segment's cost for `equal`: the time of its equal split, or `math.inf` where that
    split leaves a secondary nothing to compute (a deep segment's halo swallows a share) and a
    shorter segment might not, so that `equal` picks the segments where an equal split really
    is one. A segment between two neighbouring cut points is never ruled out: on a map of a
    few rows some shares compute nothing however short the segment."""
    cuts = graph.cut_points()
    follows = dict(zip(cuts, cuts[1:], strict=False))

    def cost(start: int, stop: int) -> float:
        split = equal_split(graph, cluster, latency, start, stop)
        lay = layout(graph, start, stop, split.order, split.blocks)
        if len(lay.secondary) < len(split.order) and follows.get(start) != stop:
            return math.inf
        return split.time_s
    return cost


def _check_cuts(graph: ModelGraph, cuts: list[int]) -> list[int]:
    end = graph.spatial_end
    points = sorted(set([0, *cuts, end]))
    bad = [c for c in points if not 0 <= c <= end]
    if bad:
        raise PlanError(f"method.cuts {bad} are outside the spatial part [0, {end}] of {graph.name}")
    return points


def emit_layout(b: PlanBuilder, start: int, stop: int, lay: Layout, source: str) -> str:
    """The ops of one segment laid out as `lay`, from the host's whole map `source`: sends,
    the secondaries' and the host's computes, returns, gather. Returns the gathered map."""
    graph, host = b.graph, b.host
    sends = [(device, b.transfer(host, device, start, graph.rows(start, *sent), [source]), out)
             for device, sent, out in lay.secondary]
    computed = [(device, b.compute(device, start, stop, graph.rows(stop, *out), [t]), out)
                for device, t, out in sends]
    pieces = [b.compute(host, start, stop, graph.rows(stop, *r), [source]) for r in lay.host]
    pieces += [b.transfer(device, host, stop, graph.rows(stop, *out), [c]) for device, c, out in computed]
    return b.gather(host, stop, graph.full(stop), pieces)


def plan_segments(graph: ModelGraph, cluster: Cluster, latency: LatencyModel, model: str,
                  method: str, splits: list[Split], classifier: bool = False) -> Plan:
    """Turn per-segment splits into a plan (shared by halp, equal, and learned splits); with
    `classifier`, the linear layers after them are shared too where that is predicted faster
    (`halp.methods.classifier`), else the host runs them."""
    b = PlanBuilder(graph, method, model, cluster.host, cluster.names)
    source = b.input()
    shares = []
    for split in splits:
        b.segments.append((split.start, split.stop))
        lay = layout(graph, split.start, split.stop, split.order, split.blocks)
        source = emit_layout(b, split.start, split.stop, lay, source)
        shares.append({"segment": [split.start, split.stop], "order": list(split.order),
                       "blocks": [list(x) for x in split.blocks], "predicted_s": split.time_s})
    tail = splits[-1].stop if splits else 0
    meta: dict[str, object] = {"splits": shares}
    if classifier:
        shared = []
        for block in split_classifier(graph, cluster, latency, tail):
            if not block.shared:
                continue  # runs on the host with its neighbours
            if block.start > tail:
                source = b.host_tail_until(tail, block.start, source)
            source = emit_layout(b, block.start, block.stop, block.layout, source)
            tail = block.stop
            shared.append({"layers": [block.start, block.stop], "predicted_s": block.time_s,
                           "features": {cluster.host: [[r.start, r.stop] for r in block.layout.host],
                                        **{d: [[out.start, out.stop]]
                                           for d, _, out in block.layout.secondary}}})
        meta["classifier"] = shared
    return b.build(b.host_tail(tail, source), **meta)


def plan(graph: ModelGraph, cluster: Cluster, latency: LatencyModel, model: str,
         cuts: list[int] | None = None, max_layers_per_segment: int | None = None,
         equal: bool = False, split_classifier: bool = True) -> Plan:
    if cuts is None:
        cost = equal_cost(graph, cluster, latency) if equal else None
        points = choose_cuts(graph, cluster, latency, max_layers_per_segment, cost)
    else:
        points = _check_cuts(graph, cuts)
    splits = []
    for a, b in zip(points, points[1:], strict=False):
        if equal:
            splits.append(equal_split(graph, cluster, latency, a, b))
        else:
            splits.append(optimise_split(graph, cluster, latency, a, b, effort=2))
    return plan_segments(graph, cluster, latency, model, "equal" if equal else "halp", splits,
                         classifier=split_classifier and not equal)
