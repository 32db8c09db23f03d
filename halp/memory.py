"""What a plan makes each device hold: the weights of what it computes, and the peak of the
activations it holds at once. Computed from the plan and its graph alone, for one request.

**Weights.** A device holds the weights of every op it computes, each op once however many of
the plan's ops compute rows of it (a block's ops each count their own). A linear layer's output
features read only their rows of the weight matrix (`halp.model.slicing.linear`), so a device
that computes some features holds those rows and their biases: the layer's weight bytes x the
features it computes (the union of its ranges) / all features. Every other op's weights are
held whole, however few rows the device computes.

**Activations.** Every op of a plan produces a block (`halp.plan`). A device walks its ops in
plan order (its computes and gathers, the transfers it sends and receives, the input on the
host); a block is held from the op that produces it until the last op on that device that
reads it (the model's output block on the host: to the end):

- `Input`: the whole input, on the host;
- `Compute`: its input blocks until it ends; while it runs, what it computes through: at each
  stage of its run the map that stage reads (when the run reads several blocks, the copy that
  stitches them for its first stage) and what the stage produces (for a block, every op's
  output until the block ends, as `halp.model.slicing` keeps them); then its output block;
- `Transfer`: on the sender, the block it sends until the transfer (its last reader there);
  on the receiver, the received block from the transfer on (a real receiver may hold it a
  little earlier, when it arrives before the device reaches that op);
- `Gather`: its pieces until it ends, and the stitched block from then on.

The peak is the largest total over the device's steps. Not counted: the runtime's own memory
(Python, PyTorch, the model object), message buffers, scratch space inside one op (a
convolution's im2col), and the blocks of other requests in flight under load (each request's
plan holds its own).

**Measured.** On the emulator and the hardware the devices' processes say what they really
hold (`halp.runtime.resident`: their resident set after the last request, and its peak), and
a report puts it beside each device's need (`memory_report`). A worker holds the weights of
the stages it computes, whole (`halp.runtime.installed`): a linear layer split by features
holds all its rows there, more than the need above counts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from halp.cluster import Cluster
from halp.model.graph import LINEAR, ModelGraph, Range, shape_bytes
from halp.plan import Compute, Gather, Input, Op, Plan, Transfer
from halp.units import format_bytes


@dataclass(frozen=True)
class DeviceMemory:
    """Bytes a device needs for one request of a plan."""

    weights_bytes: int
    peak_activation_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.peak_activation_bytes

    def to_dict(self) -> dict[str, int]:
        return {"weights_bytes": self.weights_bytes,
                "peak_activation_bytes": self.peak_activation_bytes,
                "total_bytes": self.total_bytes}

    def __str__(self) -> str:
        return (f"{format_bytes(self.total_bytes)} (weights {format_bytes(self.weights_bytes)} "
                f"+ activations {format_bytes(self.peak_activation_bytes)})")


def plan_memory(plan: Plan, graph: ModelGraph) -> dict[str, DeviceMemory]:
    """Per device of the plan (in its order), what it holds: see the module docstring."""
    weights = weights_bytes(plan, graph)
    peaks = peak_activation_bytes(plan, graph)
    return {d: DeviceMemory(weights.get(d, 0), peaks.get(d, 0)) for d in plan.devices}


def weights_bytes(plan: Plan, graph: ModelGraph) -> dict[str, int]:
    """Per device, the weight bytes of the ops it computes, each op once; a linear layer's in
    proportion to the output features the device computes."""
    whole: dict[str, dict[tuple[int, int], int]] = defaultdict(dict)
    rows: dict[str, dict[tuple[int, int], list[Range]]] = defaultdict(lambda: defaultdict(list))
    linear: dict[tuple[int, int], tuple[int, int]] = {}  # key -> (weight bytes, features)
    for op in plan.ops:
        if not isinstance(op, Compute):
            continue
        needed = graph.regions_needed(op.start, op.stop, op.out)
        for k, layer in enumerate(graph.layers[op.start:op.stop]):
            for pos, (spec, _, produced) in enumerate(layer.op_regions(needed[k + 1])):
                if not spec.weight_bytes or produced.empty:
                    continue
                key = (layer.index, pos)
                if spec.kind == LINEAR:
                    rows[op.device][key].append(produced.rows)
                    linear[key] = (spec.weight_bytes, spec.out_height)
                else:
                    whole[op.device][key] = spec.weight_bytes
    out: dict[str, int] = {}
    for device in set(whole) | set(rows):
        total = sum(whole[device].values())
        for key, ranges in rows[device].items():
            size, features = linear[key]
            total += round(size * _union(ranges) / max(1, features))
        out[device] = total
    return out


def _union(ranges: list[Range]) -> int:
    """How many rows the ranges cover together."""
    total, until = 0, None
    for r in sorted(ranges):
        start = r.start if until is None else max(r.start, until)
        if r.stop > start:
            total += r.stop - start
        until = r.stop if until is None else max(until, r.stop)
    return total


def peak_activation_bytes(plan: Plan, graph: ModelGraph) -> dict[str, int]:
    """Per device, the most activation bytes it holds at once (the lifetimes of the module
    docstring), walking its ops in plan order."""
    ops = plan.ops
    last_read: dict[tuple[str, str], int] = {}  # (device, block op id) -> step of its last reader
    for step, op in enumerate(ops):
        reader = op.src if isinstance(op, Transfer) else op.device
        for i in op.inputs:
            last_read[(reader, i)] = step
    held: dict[str, dict[str, int]] = defaultdict(dict)  # device -> block op id -> bytes
    peak: dict[str, int] = defaultdict(int)
    for step, op in enumerate(ops):
        for device in _devices_of(op):
            live = held[device]
            during = sum(live.values())
            if device == _block_device(op):  # it produces a block here
                size = _block_bytes(op, graph)
                working = _working_bytes(op, graph, len(op.inputs)) if isinstance(op, Compute) else 0
                peak[device] = max(peak[device], during + max(working, size))
                live[op.id] = size
            peak[device] = max(peak[device], sum(live.values()))
            for i in op.inputs:
                if last_read.get((device, i)) == step and i in live and i != plan.output:
                    del live[i]
            if op.id in live and op.id != plan.output and (device, op.id) not in last_read:
                del live[op.id]  # read by nobody on this device (sent on by no one): gone
    return dict(peak)


def _devices_of(op: Op) -> tuple[str, ...]:
    return (op.src, op.dst) if isinstance(op, Transfer) else (op.device,)


def _block_device(op: Op) -> str:
    return op.dst if isinstance(op, Transfer) else op.device


def _block_bytes(op: Op, graph: ModelGraph) -> int:
    if isinstance(op, Compute):
        return graph.region_bytes(op.stop, op.out)
    if isinstance(op, Transfer):
        return op.bytes
    assert isinstance(op, Input | Gather)
    return graph.region_bytes(op.boundary, op.region)


def _working_bytes(op: Compute, graph: ModelGraph, inputs: int) -> int:
    """The most a compute holds at once beside its input blocks: at each stage of its run the
    map the stage reads (for the first stage only the copy that stitches several input blocks)
    and what it produces (every op's output, for a block); its output block at the last."""
    needed = graph.regions_needed(op.start, op.stop, op.out)
    most = 0
    for k, layer in enumerate(graph.layers[op.start:op.stop]):
        boundary = op.start + k
        reads = graph.region_bytes(boundary, needed[k]) if k > 0 or inputs > 1 else 0
        if layer.nodes:
            _, wants = layer.node_regions(needed[k + 1])
            makes = sum(shape_bytes(node.spec.out_shape, w)
                        for node, w in zip(layer.nodes, wants, strict=True))
        else:
            makes = graph.region_bytes(boundary + 1, needed[k + 1])
        most = max(most, reads + makes)
    return most


# ---- limits -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Excess:
    """A device whose need is above its memory limit."""

    device: str
    need: DeviceMemory
    limit_bytes: float

    def refusal(self, method: str) -> str:
        return (f"plan {method} needs {self.need} on {self.device}, more than its memory "
                f"{format_bytes(self.limit_bytes)}")


def excesses(memory: dict[str, DeviceMemory], cluster: Cluster) -> list[Excess]:
    """The devices (of `cluster`, in its order) whose need is above their memory limit."""
    out = []
    for device in cluster.devices:
        need = memory.get(device.name)
        if need is not None and device.memory_bytes is not None \
                and need.total_bytes > device.memory_bytes:
            out.append(Excess(device.name, need, device.memory_bytes))
    return out


def fits(plan: Plan, graph: ModelGraph, cluster: Cluster) -> bool:
    """Does every device of `cluster` hold what `plan` needs of it?"""
    return not cluster.memory_limited or not excesses(plan_memory(plan, graph), cluster)


RESIDENT_SOURCE = ("resident set of each device's halp process after the last request (VmRSS), "
                   "and its peak (VmHWM)")


def memory_report(needs: list[dict[str, DeviceMemory]], cluster: Cluster,
                  resident: Mapping[str, Mapping[str, int]] | None = None) -> dict[str, object]:
    """What a report says of memory: per device the most any of the served plans needs of it
    (and its limit, if any), and the largest need of any device. With `resident` (a measured
    run's `resident_bytes`: device -> {"rss", "peak"}), each device's measured resident bytes
    beside its need (`resident_bytes`, `peak_resident_bytes`)."""
    worst: dict[str, DeviceMemory] = {}
    for need in needs:
        for device, m in need.items():
            if device not in worst or m.total_bytes > worst[device].total_bytes:
                worst[device] = m
    limits = {d.name: d.memory_bytes for d in cluster.devices}
    per_device: dict[str, dict[str, int | float | None]] = {
        d: {**m.to_dict(), "limit_bytes": limits.get(d)} for d, m in worst.items()}
    for device, measured in (resident or {}).items():
        if device in per_device:
            per_device[device].update(resident_bytes=measured["rss"],
                                      peak_resident_bytes=measured["peak"])
    top = max(worst.items(), key=lambda item: item[1].total_bytes) if worst else None
    out: dict[str, object] = {"per_device": per_device,
                              "largest_device": top[0] if top else None,
                              "largest_bytes": top[1].total_bytes if top else None}
    if resident:
        out["resident_source"] = RESIDENT_SOURCE
    return out
