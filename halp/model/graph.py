"""The ModelGraph: a chain of stages, and the receptive-field arithmetic of row slices.

This module is the single source of layer math. A model is traced (`halp.model.trace`) into a
DAG of ops and cut wherever a single tensor crosses: the pieces between two cuts are the
*stages*, `ModelGraph.layers`. A stage is one op (a `LayerSpec`) or a *block*: the sub-graph of
a residual block or an inception module, whose ops (`Node`s) read the stage input or each other.
A feature map lives at a *boundary*: boundary `l` is the input of stage `l`, boundary 0 is the
model input and boundary `len(layers)` its output. The rows an output range of a block needs are
the union over its paths; what a held range determines is the intersection. A *region* of a boundary is a rectangle of rows and columns, half-open. A flat map (after
a flatten) of F features has F rows of width 1: a linear layer can compute a range of its output
features, reading all of its input.

FLOPs are multiply-accumulates x 2 for convolutions and linear layers; pooling and elementwise
layers count one operation per element they read (they have no MACs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

BYTES_PER_ELEMENT = 4  # float32 on the wire and in memory

# Op kinds, as the latency model groups them. MERGE ops read several maps of the same rows
# (adds, channel concatenations); RESHAPE ops only move data (flatten, channel shuffles,
# splits) and cost nothing in the model. BLOCK is a stage of several ops, never an op.
CONV, DWCONV, POOL, LINEAR, ELEMENTWISE, RESHAPE = "conv", "dwconv", "pool", "linear", "elementwise", "reshape"
MERGE, BLOCK = "merge", "block"
KINDS = (CONV, DWCONV, POOL, LINEAR, ELEMENTWISE, RESHAPE, MERGE)


class Range(NamedTuple):
    """Half-open interval [start, stop) of rows or columns."""

    start: int
    stop: int

    @property
    def size(self) -> int:
        return max(0, self.stop - self.start)

    def __str__(self) -> str:
        return f"{self.start}:{self.stop}"


class Region(NamedTuple):
    """A rectangle of a feature map: rows x cols."""

    rows: Range
    cols: Range

    @property
    def empty(self) -> bool:
        return self.rows.size == 0 or self.cols.size == 0

    def contains(self, other: Region) -> bool:
        if other.empty:
            return True
        return (self.rows.start <= other.rows.start and other.rows.stop <= self.rows.stop
                and self.cols.start <= other.cols.start and other.cols.stop <= self.cols.stop)

    def __str__(self) -> str:
        return f"r{self.rows}c{self.cols}"


def region(rows: tuple[int, int], cols: tuple[int, int]) -> Region:
    return Region(Range(*rows), Range(*cols))


EMPTY_REGION = region((0, 0), (0, 0))


def hull(a: Region, b: Region) -> Region:
    """The smallest region holding both (the union of two paths' needs)."""
    if a.empty:
        return b
    if b.empty:
        return a
    return region((min(a.rows.start, b.rows.start), max(a.rows.stop, b.rows.stop)),
                  (min(a.cols.start, b.cols.start), max(a.cols.stop, b.cols.stop)))


def meet(a: Region, b: Region) -> Region:
    """The part both hold (what a merge of two paths can compute)."""
    rows = Range(max(a.rows.start, b.rows.start), min(a.rows.stop, b.rows.stop))
    cols = Range(max(a.cols.start, b.cols.start), min(a.cols.stop, b.cols.stop))
    return Region(rows, cols) if rows.size and cols.size else EMPTY_REGION


@dataclass(frozen=True)
class LayerSpec:
    """One op, or one stage: its kind, window, shapes and costs.

    `spatial` ops (convolution, pooling, elementwise, merges) can run on a row slice; the
    others (global pooling, flatten, linear) need their whole input. A block stage lists its
    ops in `nodes` (in the order they run; the last one is the block's output) and answers
    `needed`, `computable` and `flops` through them. A merge's `in_shape` counts the channels
    of all its inputs, so its bytes read are all it reads.
    """

    index: int  # the stage (boundary) this op or stage starts at
    op: str  # the torch class or function name, e.g. "Conv2d", "add"; "Block" for a block
    kind: str  # one of KINDS, or BLOCK
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    kernel: tuple[int, int] = (1, 1)  # effective kernel (dilation folded in)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    spatial: bool = True
    pad_value: float = 0.0  # what padding means: 0 for conv/avg pooling, -inf for max pooling
    macs: int = 0
    params: int = 0
    weight_bytes: int = 0
    name: str = ""  # unique within the model: the traced node's name (how it runs)
    where: str = ""  # the module path it comes from, for messages ("layer1.0.conv1")
    module: str = ""  # the module it calls, which holds its weights ("" for a function or a block)
    nodes: tuple[Node, ...] = ()

    @property
    def in_height(self) -> int:
        return _height(self.in_shape)

    @property
    def out_height(self) -> int:
        return _height(self.out_shape)

    @property
    def in_width(self) -> int:
        return _width(self.in_shape)

    @property
    def out_width(self) -> int:
        return _width(self.out_shape)

    @property
    def windowed(self) -> bool:
        """A spatial op whose output row reads more than its own input row."""
        return self.spatial and (self.kernel != (1, 1) or self.stride != (1, 1) or self.padding != (0, 0))

    def needed(self, out: Region) -> Region:
        """The input region that `out` reads, clipped to the map."""
        if out.empty:
            return EMPTY_REGION
        if self.nodes:
            return self.node_regions(out)[0]
        if not self.spatial:
            return region((0, self.in_height), (0, self.in_width))
        return Region(
            _needed(out.rows, self.kernel[0], self.stride[0], self.padding[0], self.in_height),
            _needed(out.cols, self.kernel[1], self.stride[1], self.padding[1], self.in_width),
        )

    def computable(self, held: Region) -> Region:
        """The largest output region that `held` alone determines (real padding counts only at
        the true border of the map)."""
        if self.nodes:
            done: list[Region] = []
            for node in self.nodes:
                reg = held if node.inputs[0] < 0 else done[node.inputs[0]]
                for i in node.inputs[1:]:
                    reg = meet(reg, held if i < 0 else done[i])
                done.append(EMPTY_REGION if reg.empty else node.spec.computable(reg))
            return done[-1]
        if not self.spatial:
            full = region((0, self.in_height), (0, self.in_width))
            if held == full:
                return region((0, self.out_height), (0, self.out_width))
            return EMPTY_REGION
        rows = _computable(held.rows, self.kernel[0], self.stride[0], self.padding[0],
                           self.in_height, self.out_height)
        cols = _computable(held.cols, self.kernel[1], self.stride[1], self.padding[1],
                           self.in_width, self.out_width)
        if rows.size == 0 or cols.size == 0:
            return EMPTY_REGION
        return Region(rows, cols)

    def node_regions(self, out: Region) -> tuple[Region, list[Region]]:
        """For a block producing `out`: the region of its input it reads, and the region each
        of its ops computes (the union of what their consumers read)."""
        want = [EMPTY_REGION] * len(self.nodes)
        want[-1] = out
        read = EMPTY_REGION
        for i in range(len(self.nodes) - 1, -1, -1):
            if want[i].empty:
                continue
            need = self.nodes[i].spec.needed(want[i])
            for j in self.nodes[i].inputs:
                if j < 0:
                    read = hull(read, need)
                else:
                    want[j] = hull(want[j], need)
        return read, want

    def op_regions(self, out: Region) -> list[tuple[LayerSpec, Region, Region]]:
        """(op, region of its input read, region produced) of every op producing `out`."""
        if not self.nodes:
            return [(self, self.needed(out), out)]
        _, want = self.node_regions(out)
        return [(node.spec, node.spec.needed(w), w) for node, w in zip(self.nodes, want, strict=True)]

    def flops(self, out: Region) -> float:
        """Operations to compute `out` (see the module docstring for the convention)."""
        if out.empty:
            return 0.0
        if self.nodes:
            return sum(op.flops(produced) for op, _, produced in self.op_regions(out))
        share = (out.rows.size * out.cols.size) / (self.out_height * self.out_width)
        if self.kind in (CONV, DWCONV, LINEAR):
            return 2.0 * self.macs * share
        if self.kind == RESHAPE:
            return 0.0
        return float(_numel(self.in_shape)) * share


@dataclass(frozen=True)
class Node:
    """One op of a block and where its inputs come from: earlier ops of the block by position,
    -1 for the block's input."""

    spec: LayerSpec
    inputs: tuple[int, ...]


def _height(shape: tuple[int, ...]) -> int:
    """Rows of a map: H of C x H x W (or of ... x H x W), the features of a flat map."""
    if len(shape) >= 3:
        return shape[-2]
    return shape[0] if len(shape) == 1 else 1


def _width(shape: tuple[int, ...]) -> int:
    return shape[-1] if len(shape) >= 3 else 1


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def shape_bytes(shape: tuple[int, ...], reg: Region) -> int:
    """Bytes of region `reg` of a map of `shape` (a stage's or a block op's), float32."""
    if reg.empty:
        return 0
    if len(shape) < 3:
        return _numel(shape) * reg.rows.size // _height(shape) * BYTES_PER_ELEMENT
    return _numel(shape[:-2]) * reg.rows.size * reg.cols.size * BYTES_PER_ELEMENT


def _needed(out: Range, k: int, s: int, p: int, size: int) -> Range:
    start = out.start * s - p
    stop = (out.stop - 1) * s - p + k
    return Range(max(0, start), min(size, stop))


def _computable(held: Range, k: int, s: int, p: int, in_size: int, out_size: int) -> Range:
    if held.size == 0:
        return Range(0, 0)
    # First output row whose clipped window starts inside `held`.
    first = 0 if held.start == 0 else -(-(held.start + p) // s)
    # Last output row whose clipped window ends inside `held`.
    last = out_size - 1 if held.stop >= in_size else (held.stop + p - k) // s
    last = min(last, out_size - 1)
    if last < first:
        return Range(0, 0)
    return Range(first, last + 1)


@dataclass
class ModelGraph:
    """The stages of one model, traced from its PyTorch module (`halp.model.trace`).

    `runners` says how each op runs on a region (`halp.model.slicing`), by op name."""

    name: str
    input_shape: tuple[int, int, int]
    layers: list[LayerSpec]
    runners: dict[str, Any] = field(repr=False, default_factory=dict)

    def __getstate__(self) -> dict[str, Any]:
        """Planners' copies in other processes (learning workers) carry the arithmetic, not
        the module: runners are closures over it."""
        return {**self.__dict__, "runners": {}}

    # ---- shapes ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.layers)

    def shape(self, boundary: int) -> tuple[int, ...]:
        """The shape of the feature map at `boundary` (without the batch dimension)."""
        if boundary == 0:
            return self.input_shape
        return self.layers[boundary - 1].out_shape

    def height(self, boundary: int) -> int:
        return _height(self.shape(boundary))

    def width(self, boundary: int) -> int:
        return _width(self.shape(boundary))

    def full(self, boundary: int) -> Region:
        return region((0, self.height(boundary)), (0, self.width(boundary)))

    def rows(self, boundary: int, start: int, stop: int) -> Region:
        """Rows [start, stop) at full width."""
        return region((start, stop), (0, self.width(boundary)))

    def region_bytes(self, boundary: int, reg: Region) -> int:
        """Bytes of `reg` of the map at `boundary`, float32."""
        return shape_bytes(self.shape(boundary), reg)

    @property
    def spatial_end(self) -> int:
        """The first boundary after which no stage can run on a row slice."""
        for layer in self.layers:
            if not layer.spatial:
                return layer.index
        return len(self.layers)

    def primitives(self, start: int, stop: int) -> list[LayerSpec]:
        """The ops of stages [start, stop), blocks opened."""
        return [op for layer in self.layers[start:stop]
                for op in ([n.spec for n in layer.nodes] if layer.nodes else [layer])]

    # ---- receptive fields -----------------------------------------------------------------
    def _row_windows(self, start: int, stop: int) -> list[LayerSpec | tuple[int, int, int, int, int]]:
        """(kernel, stride, padding, in height, out height) of the row-changing ops, and the
        blocks themselves (their rows go through their paths)."""
        key = (start, stop)
        cache = self.__dict__.setdefault("_windows", {})
        if key not in cache:
            cache[key] = [layer if layer.nodes else
                          (layer.kernel[0], layer.stride[0], layer.padding[0], layer.in_height, layer.out_height)
                          for layer in self.layers[start:stop]
                          if layer.spatial and (layer.nodes or (layer.kernel[0], layer.stride[0], layer.padding[0]) != (1, 1, 0))]
        return cache[key]

    def _block_rows(self, block: LayerSpec, rows: tuple[int, int], forward: bool) -> tuple[int, int]:
        """A block's rows-only `needed` (or `computable`, forward), memoised: planners ask
        for the same few thousand row ranges over and over."""
        cache = self.__dict__.setdefault("_block_rows_memo", {})
        key = (block.index, rows, forward)
        hit = cache.get(key)
        if hit is None:
            if forward:
                reg = block.computable(region(rows, (0, block.in_width)))
            else:
                reg = block.needed(region(rows, (0, block.out_width)))
            hit = cache[key] = (reg.rows.start, reg.rows.stop) if not reg.empty else (0, 0)
        return hit

    def block_op_rows(self, block: LayerSpec, rows: tuple[int, int]) -> tuple[tuple[int, int], list[tuple[int, int]]]:
        """For a block producing rows `rows` at full width: the rows it reads, and (rows read,
        rows produced) by each of its ops, memoised (the latency model's hot path)."""
        cache = self.__dict__.setdefault("_block_op_rows_memo", {})
        key = (block.index, rows)
        hit = cache.get(key)
        if hit is None:
            read, want = block.node_regions(region(rows, (0, block.out_width)))
            sizes = [(node.spec.needed(w).rows.size, w.rows.size) if not w.empty else (0, 0)
                     for node, w in zip(block.nodes, want, strict=True)]
            hit = cache[key] = ((read.rows.start, read.rows.stop) if not read.empty else (0, 0), sizes)
        return hit

    def row_needed(self, start: int, stop: int, rows: tuple[int, int]) -> tuple[int, int]:
        """Rows-only `rows_needed` at full width: the planners' hot path."""
        if self.layers[start:stop] and not all(layer.spatial for layer in self.layers[start:stop]):
            return (0, self.height(start))
        a, b = rows
        if b <= a:
            return (0, 0)
        for window in reversed(self._row_windows(start, stop)):
            if isinstance(window, LayerSpec):
                a, b = self._block_rows(window, (a, b), forward=False)
                if b <= a:
                    return (0, 0)
                continue
            k, st, p, h_in, _ = window
            a, b = max(0, a * st - p), min(h_in, (b - 1) * st - p + k)
        return (a, b)

    def row_computable(self, start: int, stop: int, rows: tuple[int, int]) -> tuple[int, int]:
        """Rows-only `computable` at full width (a block of whole rows)."""
        if not all(layer.spatial for layer in self.layers[start:stop]):
            full = rows == (0, self.height(start))
            return (0, self.height(stop)) if full else (0, 0)
        held = Range(*rows)
        for window in self._row_windows(start, stop):
            if isinstance(window, LayerSpec):
                held = Range(*self._block_rows(window, (held.start, held.stop), forward=True))
            else:
                k, st, p, h_in, h_out = window
                held = _computable(held, k, st, p, h_in, h_out)
            if held.size == 0:
                return (0, 0)
        return (held.start, held.stop)

    def regions_needed(self, start: int, stop: int, out: Region) -> list[Region]:
        """For stages [start, stop) producing `out` at boundary `stop`: the region needed at
        every boundary from `start` to `stop` (index 0 is the input region)."""
        needed = [out]
        for layer in reversed(self.layers[start:stop]):
            needed.append(layer.needed(needed[-1]))
        return needed[::-1]

    def rows_needed(self, start: int, stop: int, out: Region) -> Region:
        """The input region at boundary `start` that `out` at boundary `stop` reads."""
        return self.regions_needed(start, stop, out)[0]

    def computable(self, start: int, stop: int, held: Region) -> Region:
        """The largest region at boundary `stop` that `held` at boundary `start` determines."""
        reg = held
        for layer in self.layers[start:stop]:
            reg = layer.computable(reg)
            if reg.empty:
                return reg
        return reg

    # ---- costs ----------------------------------------------------------------------------
    def layer_regions(self, start: int, stop: int, out: Region) -> list[tuple[LayerSpec, Region, Region]]:
        """(op, input region, output region) for each op of a fused run producing `out`,
        blocks opened into their ops."""
        needed = self.regions_needed(start, stop, out)
        return [triple for i, layer in enumerate(self.layers[start:stop])
                for triple in layer.op_regions(needed[i + 1])]

    def flops(self, start: int, stop: int, out: Region | None = None) -> float:
        out = self.full(stop) if out is None else out
        return sum(layer.flops(o) for layer, _, o in self.layer_regions(start, stop, out))

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    def cut_points(self) -> list[int]:
        """Boundaries where a segment may start or end in the spatial part of the network:
        before every weighted or windowed op and every block, and at the end of the spatial
        part."""
        cuts = [0]
        for layer in self.layers[: self.spatial_end]:
            if layer.index > 0 and layer.kind in (CONV, DWCONV, POOL, BLOCK):
                cuts.append(layer.index)
        if self.spatial_end not in cuts:
            cuts.append(self.spatial_end)
        return cuts

    def describe(self) -> list[dict[str, object]]:
        return [_describe_op(layer) for layer in self.layers]


def _describe_op(layer: LayerSpec) -> dict[str, object]:
    row: dict[str, object] = {
        "index": layer.index, "op": layer.op, "kind": layer.kind, "where": layer.where,
        "in": list(layer.in_shape), "out": list(layer.out_shape), "kernel": list(layer.kernel),
        "stride": list(layer.stride), "padding": list(layer.padding), "groups": layer.groups,
        "macs": layer.macs, "params": layer.params}
    if layer.nodes:
        row["ops"] = [{**_describe_op(node.spec), "inputs": list(node.inputs)} for node in layer.nodes]
    return row
