"""The ops a profile is measured on: which ones, and the record of one once timed.

What is timed is exactly what a device executes: `run_region` on a row slice, for single
stages and for fused runs (a conv/dwconv/pool or a block with the stages up to the next one,
runs of 2..N of those, the whole spatial part, the classifier), at several slice heights and
at random row positions (so slices with and without the map's border are both seen). A block
(a residual block, an inception module) is timed whole, as one stage, and each of its ops
alone too, on its own inputs as the block runs it (`OpSpec.node`): that is where a merge (an
add, a channel concatenation) is seen by itself, next to the convolutions that dwarf it in
the block's time. `plan_ops` chooses them; `halp.latency.timing` times them into `Sample`s,
which `halp.latency.profile_fit` fits.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from halp.latency.fit import Observation
from halp.latency.profile import layer_features
from halp.model.graph import (
    CONV,
    DWCONV,
    ELEMENTWISE,
    LINEAR,
    MERGE,
    POOL,
    RESHAPE,
    LayerSpec,
    ModelGraph,
    Region,
    region,
)
from halp.model.slicing import run_region
from halp.model.trace import trace_model
from halp.model.zoo import ModelSpec, build_model

# The slice heights timed by default, as fractions of each map's height.
DEFAULT_HEIGHTS = (1.0, 1 / 2, 1 / 4, 1 / 8)
# Layer kinds from the heaviest to the lightest: the kind a fused run is reported under.
HEAVIEST_FIRST = (CONV, DWCONV, LINEAR, POOL, MERGE, ELEMENTWISE)
# The ops that make a fused run longer (`Sample.segments`).
SEGMENT_KINDS = (CONV, DWCONV, POOL)


@dataclass(frozen=True)
class Sample:
    """One measured op: stages [start, stop) of `model` producing rows `rows` at `stop`, or
    (`node` set) op `node` alone of the block stage `start`, producing rows `rows` of its own
    output."""

    model: str
    start: int
    stop: int
    rows: tuple[int, int]
    height: int  # of the map it produces (at boundary `stop`, or the op's output)
    kinds: tuple[str, ...]  # the kind of every op that costs time, blocks opened
    segments: int  # its conv, dwconv and pool ops (a block's included): the length of a fused run
    terms: tuple[tuple[str, tuple[float, ...]], ...]
    seconds: float
    calls: int = 0  # timed calls, clean or not
    clean: int = 0  # calls during which this thread kept its core
    clean_s: tuple[float, ...] = ()  # their times
    node: int | None = None  # an op of a block timed alone: its position in the block

    @property
    def fused(self) -> bool:
        return len(self.terms) > 1

    @property
    def partial(self) -> bool:
        return self.rows[1] - self.rows[0] < self.height

    @property
    def kind(self) -> str:
        """The kind of a single op; for a fused run (or a block) its heaviest kind."""
        return heaviest(self.kinds)

    def observation(self) -> Observation:
        return Observation(self.terms, self.seconds)


def heaviest(kinds: Sequence[str]) -> str:
    """The heaviest of `kinds` (`HEAVIEST_FIRST`), reshape when none costs time."""
    for kind in HEAVIEST_FIRST:
        if kind in kinds:
            return kind
    return kinds[0] if kinds else RESHAPE


@dataclass(frozen=True)
class OpSpec:
    """One op to time: stages [start, stop) of `graph` producing the region `out` at `stop`;
    or, with `node` set, op `node` of the block stage `start` alone, producing the region `out`
    of its own output (stop is start + 1)."""

    graph: ModelGraph
    start: int
    stop: int
    out: Region
    node: int | None = None

    @property
    def op(self) -> LayerSpec | None:
        """The block's op timed alone, or None for stages."""
        return None if self.node is None else self.graph.layers[self.start].nodes[self.node].spec

    @property
    def height(self) -> int:
        op = self.op
        return self.graph.height(self.stop) if op is None else op.out_height

    def primitives(self) -> list[LayerSpec]:
        """Every op this runs, blocks opened."""
        op = self.op
        return self.graph.primitives(self.start, self.stop) if op is None else [op]

    def regions(self) -> list[tuple[LayerSpec, Region, Region]]:
        """(op, region read, region produced) of every op this runs, blocks opened."""
        op = self.op
        if op is None:
            return self.graph.layer_regions(self.start, self.stop, self.out)
        return [(op, op.needed(self.out), self.out)]

    def inputs(self) -> list[tuple[tuple[int, ...], Region]]:
        """(shape of the map, region of it read) of each input, in the order `runner` takes them:
        the stage input; or each input of the block's op (the block's input or an earlier op's
        output), as the block runs it."""
        if self.node is None:
            return [(self.graph.shape(self.start), self.graph.rows_needed(self.start, self.stop, self.out))]
        block = self.graph.layers[self.start]
        node = block.nodes[self.node]
        reads = node.spec.needed(self.out)
        return [(block.in_shape if i < 0 else block.nodes[i].spec.out_shape, reads) for i in node.inputs]

    def runner(self) -> Callable[[Sequence[torch.Tensor]], torch.Tensor]:
        """What a device runs to compute `out` from inputs holding the regions `inputs` says,
        with the regions worked out beforehand (they are not part of the time)."""
        graph, start, stop, out, op = self.graph, self.start, self.stop, self.out, self.op
        if op is None:
            held = self.inputs()[0][1]
            return lambda xs: run_region(graph, start, stop, xs[0], held, out)
        run, reads = graph.runners[op.name], op.needed(out)
        return lambda xs: run(xs, reads, out)

    def kinds(self) -> tuple[str, ...]:
        return tuple(op.kind for op in self.primitives() if op.kind != RESHAPE)

    def terms(self) -> tuple[tuple[str, tuple[float, ...]], ...]:
        """(kind, features) of every op that costs time (reshapes are free)."""
        return tuple((op.kind, tuple(layer_features(op, held, produced)))
                     for op, held, produced in self.regions()
                     if op.kind != RESHAPE and not produced.empty)


def layer_terms(graph: ModelGraph, start: int, stop: int, out: Region):
    """(kind, features) of every op of a fused run that costs time (reshapes are free)."""
    return OpSpec(graph, start, stop, out).terms()


def graph_of(spec: ModelSpec) -> ModelGraph:
    """The layer graph of a zoo model: what `plan_ops` chooses ops from."""
    return trace_model(build_model(spec), spec.shape, spec.variant)


def plan_ops(graph: ModelGraph, heights: Sequence[float], max_run: int, rng: random.Random,
             singles: bool = True, runs: bool = True) -> list[OpSpec]:
    """The ops to time on `graph`: single stages (and each op of a block alone) and fused
    runs, each on row slices."""
    ops: list[OpSpec] = []

    def sliced(start: int, stop: int, node: int | None = None) -> None:
        if node is None:
            full_h, width = graph.height(stop), graph.width(stop)
        else:
            spec = graph.layers[start].nodes[node].spec
            full_h, width = spec.out_height, spec.out_width
        seen = set()
        for fraction in heights:
            size = max(1, min(full_h, round(full_h * fraction)))
            first = rng.randint(0, full_h - size)
            if (first, size) in seen:
                continue
            seen.add((first, size))
            ops.append(OpSpec(graph, start, stop, region((first, first + size), (0, width)), node))

    end = graph.spatial_end
    if singles:
        for layer in graph.layers:
            if layer.kind == RESHAPE:
                continue
            if layer.index < end:
                sliced(layer.index, layer.index + 1)
                for i, node in enumerate(layer.nodes):
                    if node.spec.kind != RESHAPE:
                        sliced(layer.index, layer.index + 1, i)
            else:
                ops.append(OpSpec(graph, layer.index, layer.index + 1, graph.full(layer.index + 1)))
    if runs:
        cuts = graph.cut_points()
        lengths = sorted({*range(1, max_run + 1), 2 * max_run, len(cuts) - 1})
        for length in lengths:
            for a in range(len(cuts) - length):
                start, stop = cuts[a], cuts[a + length]
                if stop - start > 1:
                    sliced(start, stop)
        if end < len(graph.layers):
            ops.append(OpSpec(graph, end, len(graph.layers), graph.full(len(graph.layers))))
    return ops
