"""Stand-alone: the whole model on the host, the baseline every speedup is measured against."""

from __future__ import annotations

from halp.cluster import Cluster
from halp.methods.common import PlanBuilder
from halp.model.graph import ModelGraph
from halp.plan import Plan


def plan(graph: ModelGraph, cluster: Cluster, model: str) -> Plan:
    b = PlanBuilder(graph, "standalone", model, cluster.host, cluster.names)
    source = b.input()
    end = graph.spatial_end
    if end > 0:  # spatial part and tail as two ops, so timelines show where the maps end
        source = b.compute(cluster.host, 0, end, graph.full(end), [source])
        b.segments.append((0, end))
    return b.build(b.host_tail(end, source))
