"""All the simulator's cost arithmetic: what each op of a plan holds, and for how long.

A compute or gather op holds its device for the latency model's prediction
(`halp.schedule.compute_s`). A transfer waits in its sender's queue for its destination (a
device sends to each peer in plan order, to different peers at once, as the runtime does over
one socket per peer), then holds its link(s) for its message cost (one overhead plus signing
and checking its bytes, `LatencyModel.message_s`), then its bits on the wire (frames included,
`halp.network.wire_bits`) at the link's rate, then the propagation delay (plus jitter, when
the scenario has some):

    end = finish_time(start + message, bits) + delay

`finish_time` integrates the bits exactly across the rate changes of a bandwidth trace; on a
constant link this is `message + wire_bits(bytes) / bps + delay`, the latency model's `transfer_s`.

Links. On a `star` each secondary has a full-duplex link to the host, one resource per
direction (`pi1->pi0`, `pi0->pi1`); a transfer between two secondaries holds the sender's
uplink and the receiver's downlink, at the lower of their two rates at every instant. On a
`shared` network every transfer holds the one half-duplex `channel`, at the rate of the link of
the secondary it involves.

A plan is compiled once (`compile_plan`) into flat tuples: which server runs each op, its
inputs by index, its fixed duration, so the event loop does no per-op lookups.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from halp.cluster import SHARED, Cluster
from halp.latency.model import LatencyModel
from halp.model.graph import ModelGraph
from halp.network import BandwidthTrace, wire_bits
from halp.plan import Input, Plan, Transfer
from halp.schedule import compute_s
from halp.trace import resource_of

INPUT, COMPUTE, TRANSFER = 0, 1, 2
CHANNEL = "channel"


def sender(src: str, dst: str) -> str:
    """The name of the queue of transfers from `src` to `dst` (a server apart from compute)."""
    return f"send:{src}->{dst}"


def min_trace(a: BandwidthTrace, b: BandwidthTrace) -> BandwidthTrace:
    """The pointwise lower rate of two traces."""
    times = sorted(set(a.times) | set(b.times))
    values = [min(a.rate_at(t), b.rate_at(t)) for t in times]
    keep_t, keep_v = [times[0]], [values[0]]
    for t, v in zip(times[1:], values[1:], strict=True):
        if v != keep_v[-1]:
            keep_t.append(t)
            keep_v.append(v)
    return BandwidthTrace(tuple(keep_t), tuple(keep_v))


class Links:
    """The network of a cluster as the simulator plays it: which link resources a transfer
    holds, and the bandwidth over time between two devices (the ground truth, `traces`)."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.host = cluster.host
        self.shared = cluster.network == SHARED
        self.message_s = LatencyModel(cluster).message_s
        self.delay_s = cluster.delay_s
        self._traces: dict[tuple[str, str], BandwidthTrace] = {}

    def trace_of(self, device: str) -> BandwidthTrace:
        trace = self.cluster.traces.get(device)
        if trace is None:
            return BandwidthTrace.constant(self.cluster.bandwidth_bps[device])
        return trace

    def held(self, src: str, dst: str) -> tuple[str, ...]:
        """The link resources a transfer from `src` to `dst` holds, in acquisition order."""
        if self.shared:
            return (CHANNEL,)
        if self.host in (src, dst):
            return (f"{src}->{dst}",)
        return (f"{src}->{self.host}", f"{self.host}->{dst}")

    def trace(self, src: str, dst: str) -> BandwidthTrace:
        key = (src, dst)
        hit = self._traces.get(key)
        if hit is None:
            if self.host in (src, dst):
                hit = self.trace_of(self.cluster.link_of(src, dst))
            else:
                hit = min_trace(self.trace_of(src), self.trace_of(dst))
            self._traces[key] = hit
        return hit

    def fixed_s(self, src: str, dst: str, nbytes: int) -> float | None:
        """The transfer time when it does not depend on the start (a constant link)."""
        trace = self.trace(src, dst)
        if not trace.is_constant:
            return None
        return self.message_s(nbytes) + wire_bits(nbytes) / trace.values[0] + self.delay_s

    def end_s(self, src: str, dst: str, nbytes: int, start: float, delay_s: float) -> float:
        """When a transfer starting at `start` ends, its bits integrated over the trace."""
        return (self.trace(src, dst).finish_time(start + self.message_s(nbytes), wire_bits(nbytes))
                + delay_s)


@dataclass(frozen=True)
class Compiled:
    """A plan flattened for the event loop; op `i` is `plan.ops[i]`."""

    plan: Plan
    kind: tuple[int, ...]  # INPUT, COMPUTE (compute or gather) or TRANSFER
    server: tuple[str, ...]  # the device (compute) or the sender queue (transfer) that runs the op
    inputs: tuple[tuple[int, ...], ...]
    duration: tuple[float, ...]  # NaN where it depends on the start (a bandwidth trace)
    links: tuple[tuple[str, ...], ...]  # link resources a transfer holds
    output: int
    # For records:
    resource: tuple[str, ...]
    device: tuple[str, ...]
    nbytes: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.kind)


def compile_plan(plan: Plan, graph: ModelGraph, latency: LatencyModel, links: Links) -> Compiled:
    index = {op.id: i for i, op in enumerate(plan.ops)}
    kind: list[int] = []
    server: list[str] = []
    inputs: list[tuple[int, ...]] = []
    duration: list[float] = []
    held: list[tuple[str, ...]] = []
    resource: list[str] = []
    device: list[str] = []
    nbytes: list[int] = []
    for op in plan.ops:
        inputs.append(tuple(index[i] for i in op.inputs))
        resource.append(resource_of(op, links.cluster.network))
        if isinstance(op, Input):
            kind.append(INPUT)
            server.append("")
            duration.append(0.0)
            held.append(())
            device.append(op.device)
            nbytes.append(0)
        elif isinstance(op, Transfer):
            kind.append(TRANSFER)
            server.append(sender(op.src, op.dst))
            fixed = links.fixed_s(op.src, op.dst, op.bytes)
            duration.append(math.nan if fixed is None else fixed)
            held.append(links.held(op.src, op.dst))
            device.append(op.src)
            nbytes.append(op.bytes)
        else:
            kind.append(COMPUTE)
            server.append(op.device)
            duration.append(compute_s(op, graph, latency))
            held.append(())
            device.append(op.device)
            nbytes.append(0)
    return Compiled(plan, tuple(kind), tuple(server), tuple(inputs), tuple(duration), tuple(held),
                    index[plan.output], tuple(resource), tuple(device), tuple(nbytes))

