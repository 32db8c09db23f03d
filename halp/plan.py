"""The Plan: the contract between planners and backends, as plain data.

A plan is the DAG of ops that serves one request. Every op produces one *block*: a region of
the feature map at some boundary, held on some device.

- `Input`: the model input, on the host, when the request arrives.
- `Compute(device, layers [start, stop), out)`: runs a fused run of layers; it reads the region
  of boundary `start` that `out` needs (its halo included), assembled from its input blocks.
- `Transfer(src, dst, boundary, region)`: copies exactly that region from `src` to `dst`.
- `Gather(device, boundary, region)`: stitches blocks already on `device` into one block.

`inputs` lists the op ids whose blocks an op reads; they must sit on the op's device (the
sender for a transfer) at the right boundary and together cover what the op reads. The order of
`ops` is the plan order: a device runs its ops in that order. Plans round-trip through JSON and
print compactly, one op per line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from halp.errors import PlanError
from halp.model.graph import ModelGraph, Range, Region


def _region(value: Any) -> Region:
    rows, cols = value
    return Region(Range(*rows), Range(*cols))


@dataclass(frozen=True)
class Input:
    id: str
    device: str
    boundary: int
    region: Region
    kind: str = "input"

    @property
    def inputs(self) -> tuple[str, ...]:
        return ()

    def block(self) -> tuple[str, int, Region]:
        return self.device, self.boundary, self.region

    def __str__(self) -> str:
        return f"{self.id}: input @{self.device} b{self.boundary} {self.region}"


@dataclass(frozen=True)
class Compute:
    id: str
    device: str
    start: int
    stop: int
    out: Region
    inputs: tuple[str, ...]
    flops: float = 0.0
    kind: str = "compute"

    def block(self) -> tuple[str, int, Region]:
        return self.device, self.stop, self.out

    def __str__(self) -> str:
        return (f"{self.id}: compute @{self.device} L{self.start}:{self.stop} {self.out} "
                f"<- {','.join(self.inputs)}")


@dataclass(frozen=True)
class Transfer:
    id: str
    src: str
    dst: str
    boundary: int
    region: Region
    bytes: int
    inputs: tuple[str, ...]
    kind: str = "transfer"

    @property
    def device(self) -> str:
        return self.dst

    def block(self) -> tuple[str, int, Region]:
        return self.dst, self.boundary, self.region

    def __str__(self) -> str:
        return (f"{self.id}: transfer {self.src}->{self.dst} b{self.boundary} {self.region} "
                f"{self.bytes}B <- {','.join(self.inputs)}")


@dataclass(frozen=True)
class Gather:
    id: str
    device: str
    boundary: int
    region: Region
    inputs: tuple[str, ...]
    kind: str = "gather"

    def block(self) -> tuple[str, int, Region]:
        return self.device, self.boundary, self.region

    def __str__(self) -> str:
        return f"{self.id}: gather @{self.device} b{self.boundary} {self.region} <- {','.join(self.inputs)}"


Op = Input | Compute | Transfer | Gather
_KINDS: dict[str, type] = {"input": Input, "compute": Compute, "transfer": Transfer, "gather": Gather}


def reads(op: Op, graph: ModelGraph) -> tuple[str, int, Region] | None:
    """(device, boundary, region) that `op` reads from its input blocks."""
    if isinstance(op, Compute):
        return op.device, op.start, graph.rows_needed(op.start, op.stop, op.out)
    if isinstance(op, Transfer):
        return op.src, op.boundary, op.region
    if isinstance(op, Gather):
        return op.device, op.boundary, op.region
    return None


@dataclass
class Plan:
    """The ops of one request, in plan order, and what they are for."""

    method: str
    model: str  # the model variant, e.g. "vgg16" or "0.5_160"
    host: str
    devices: list[str]
    ops: list[Op]
    output: str  # id of the op whose block is the model output on the host
    segments: list[tuple[int, int]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def op(self, op_id: str) -> Op:
        for op in self.ops:
            if op.id == op_id:
                return op
        raise KeyError(op_id)

    def by_id(self) -> dict[str, Op]:
        return {op.id: op for op in self.ops}

    @property
    def input_id(self) -> str:
        return next(op.id for op in self.ops if isinstance(op, Input))

    # ---- text and JSON --------------------------------------------------------------------
    def __str__(self) -> str:
        head = f"plan {self.method} for {self.model}: host {self.host}, devices {','.join(self.devices)}"
        return "\n".join([head, *(f"  {op}" for op in self.ops), f"  output: {self.output}"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method, "model": self.model, "host": self.host,
            "devices": list(self.devices), "output": self.output,
            "segments": [list(s) for s in self.segments], "meta": self.meta,
            "ops": [_op_dict(op) for op in self.ops],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        ops: list[Op] = []
        for raw in data["ops"]:
            raw = dict(raw)
            kind = raw.pop("kind")
            if kind not in _KINDS:
                raise PlanError(f"unknown op kind {kind!r} in plan")
            for key in ("region", "out"):
                if key in raw:
                    raw[key] = _region(raw[key])
            if "inputs" in raw:
                raw["inputs"] = tuple(raw["inputs"])
            ops.append(_KINDS[kind](**raw))
        return cls(method=data["method"], model=data["model"], host=data["host"],
                   devices=list(data["devices"]), ops=ops, output=data["output"],
                   segments=[tuple(s) for s in data.get("segments", [])],  # type: ignore[misc]
                   meta=dict(data.get("meta", {})))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.from_dict(json.loads(text))


def _op_dict(op: Op) -> dict[str, Any]:
    data = asdict(op)
    for key in ("region", "out"):
        if key in data:
            data[key] = [list(data[key][0]), list(data[key][1])]
    if "inputs" in data:
        data["inputs"] = list(op.inputs)
    return data


# ---- validation ---------------------------------------------------------------------------
def validate(plan: Plan, graph: ModelGraph) -> None:
    """Check the contract; raise `PlanError` with a device-by-step grid marking the broken op."""
    seen: dict[str, Op] = {}
    for step, op in enumerate(plan.ops):
        problem = _problem(plan, graph, op, seen)
        if problem:
            raise PlanError(f"plan {plan.method}: op {op.id} ({op.kind}) {problem}\n"
                            + grid(plan, mark=step))
        seen[op.id] = op
    if plan.output not in seen:
        raise PlanError(f"plan {plan.method}: output op {plan.output!r} does not exist")
    out = seen[plan.output]
    end = len(graph)
    if out.block() != (plan.host, end, graph.full(end)):
        raise PlanError(f"plan {plan.method}: output op {plan.output} holds {out.block()}, "
                        f"not the whole output on host {plan.host}")
    if sum(isinstance(op, Input) for op in plan.ops) != 1:
        raise PlanError(f"plan {plan.method}: needs exactly one input op")


def _problem(plan: Plan, graph: ModelGraph, op: Op, seen: dict[str, Op]) -> str | None:
    if op.id in seen:
        return "reuses an id"
    devices = [op.src, op.dst] if isinstance(op, Transfer) else [op.device]
    for device in devices:
        if device not in plan.devices:
            return f"names unknown device {device!r}"
    if isinstance(op, Input):
        if op.device != plan.host or op.boundary != 0 or op.region != graph.full(0):
            return "must be the whole model input on the host"
        return None
    if isinstance(op, Compute):
        if not 0 <= op.start < op.stop <= len(graph):
            return f"has bad layers [{op.start},{op.stop})"
        if not graph.full(op.stop).contains(op.out) or op.out.empty:
            return f"computes {op.out}, outside the map at boundary {op.stop}"
    if isinstance(op, Transfer):
        if op.src == op.dst:
            return "sends to itself"
        if op.bytes != graph.region_bytes(op.boundary, op.region):
            return f"says {op.bytes} bytes for a region of {graph.region_bytes(op.boundary, op.region)}"
    missing = [i for i in op.inputs if i not in seen]
    if missing:
        return f"reads {','.join(missing)}, which no earlier op produces"
    where = reads(op, graph)
    assert where is not None
    device, boundary, need = where
    pieces = []
    for input_id in op.inputs:
        block = seen[input_id].block()
        if block[0] != device or block[1] != boundary:
            return (f"reads {input_id}, which holds boundary {block[1]} on {block[0]}, "
                    f"but it needs boundary {boundary} on {device}")
        pieces.append(block[2])
    if not covers(need, pieces):
        return f"needs {need} at boundary {boundary}, which its inputs do not cover"
    return None


def covers(need: Region, pieces: list[Region]) -> bool:
    """Do the pieces together cover every cell of `need`?

    On the grid of the pieces' own edges, not of cells, so memory grows with the number of
    pieces, not with the feature map (a 4096 x 4096 map would be a 16 MB mask per op)."""
    if need.empty:
        return True
    clipped = []
    for piece in pieces:
        r0, r1 = max(need.rows.start, piece.rows.start), min(need.rows.stop, piece.rows.stop)
        c0, c1 = max(need.cols.start, piece.cols.start), min(need.cols.stop, piece.cols.stop)
        if r0 < r1 and c0 < c1:
            clipped.append((r0, r1, c0, c1))
    rows = sorted({need.rows.start, need.rows.stop, *(e for p in clipped for e in p[:2])})
    cols = sorted({need.cols.start, need.cols.stop, *(e for p in clipped for e in p[2:])})
    row_at = {edge: i for i, edge in enumerate(rows)}
    col_at = {edge: i for i, edge in enumerate(cols)}
    mask = np.zeros((len(rows) - 1, len(cols) - 1), dtype=bool)
    for r0, r1, c0, c1 in clipped:
        mask[row_at[r0]:row_at[r1], col_at[c0]:col_at[c1]] = True
    return bool(mask.all())


def grid(plan: Plan, mark: int | None = None, window: int = 10) -> str:
    """A device-by-step table of the plan; the op at step `mark` shows as `>id<`."""
    lo, hi = 0, len(plan.ops)
    if mark is not None:
        lo, hi = max(0, mark - window), min(len(plan.ops), mark + 2)
    lanes: dict[str, list[str]] = {}
    steps = list(range(lo, hi))
    for device in plan.devices:
        lanes[device] = ["." for _ in steps]
    for col, step in enumerate(steps):
        op = plan.ops[step]
        lane = f"{op.src}>{op.dst}" if isinstance(op, Transfer) else op.device
        lanes.setdefault(lane, ["." for _ in steps])
        lanes[lane][col] = f">{op.id}<" if step == mark else op.id
    width = max([len(c) for cells in lanes.values() for c in cells] + [3])
    name_width = max(len(n) for n in lanes)
    header = " " * name_width + " | " + " ".join(f"{s:>{width}}" for s in steps)
    rows = [f"{name:>{name_width}} | " + " ".join(f"{c:>{width}}" for c in cells)
            for name, cells in lanes.items()]
    return "\n".join([header, *rows])
