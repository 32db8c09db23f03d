"""The ops a profile is measured on: which ones, and the record of one once timed.

What is timed is exactly what a device executes: `run_region` on a row slice, for single
layers and for fused runs (a conv/dwconv/pool with the layers up to the next one, runs of 2..N
of those, the whole spatial part, the classifier), at several slice heights and at random row
positions (so slices with and without the map's border are both seen). `plan_ops` chooses
them; `halp.latency.timing` times them into `Sample`s, which `halp.latency.profile_fit` fits.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from halp.latency.fit import Observation
from halp.latency.profile import layer_features
from halp.model.graph import RESHAPE, ModelGraph, Region
from halp.model.trace import trace_model
from halp.model.zoo import ModelSpec, build_model

# The slice heights timed by default, as fractions of each map's height.
DEFAULT_HEIGHTS = (1.0, 1 / 2, 1 / 4, 1 / 8)


@dataclass(frozen=True)
class Sample:
    """One measured op: layers [start, stop) of `model` producing rows `rows` at `stop`."""

    model: str
    start: int
    stop: int
    rows: tuple[int, int]
    height: int  # of the map at boundary `stop`
    kinds: tuple[str, ...]  # the kind of every layer that costs time
    segments: int  # its conv, dwconv and pool layers: the length of a fused run
    terms: tuple[tuple[str, tuple[float, ...]], ...]
    seconds: float
    calls: int = 0  # timed calls, clean or not
    clean: int = 0  # calls during which this thread kept its core
    clean_s: tuple[float, ...] = ()  # their times

    @property
    def fused(self) -> bool:
        return len(self.terms) > 1

    @property
    def partial(self) -> bool:
        return self.rows[1] - self.rows[0] < self.height

    @property
    def kind(self) -> str:
        """The layer kind of a single-layer op; for a fused run its heaviest kind."""
        for kind in ("conv", "dwconv", "linear", "pool", "elementwise"):
            if kind in self.kinds:
                return kind
        return self.kinds[0] if self.kinds else RESHAPE

    def observation(self) -> Observation:
        return Observation(self.terms, self.seconds)


@dataclass(frozen=True)
class OpSpec:
    """One op to time: layers [start, stop) of `graph` producing the region `out`."""

    graph: ModelGraph
    start: int
    stop: int
    out: Region


def layer_terms(graph: ModelGraph, start: int, stop: int, out: Region):
    """(kind, features) of every layer of a fused run that costs time (reshapes are free)."""
    return tuple(
        (layer.kind, tuple(layer_features(layer, held, produced)))
        for layer, held, produced in graph.layer_regions(start, stop, out)
        if layer.kind != RESHAPE and not produced.empty
    )


def graph_of(spec: ModelSpec) -> ModelGraph:
    """The layer graph of a zoo model: what `plan_ops` chooses ops from."""
    return trace_model(build_model(spec), spec.shape, spec.variant)


def plan_ops(graph: ModelGraph, heights: Sequence[float], max_run: int, rng: random.Random,
             singles: bool = True, runs: bool = True) -> list[OpSpec]:
    """The ops to time on `graph`: single layers and fused runs, each on row slices."""
    ops: list[OpSpec] = []

    def sliced(start: int, stop: int) -> None:
        full_h = graph.height(stop)
        seen = set()
        for fraction in heights:
            size = max(1, min(full_h, round(full_h * fraction)))
            first = rng.randint(0, full_h - size)
            if (first, size) in seen:
                continue
            seen.add((first, size))
            ops.append(OpSpec(graph, start, stop, graph.rows(stop, first, first + size)))

    end = graph.spatial_end
    if singles:
        for layer in graph.layers:
            if layer.kind == RESHAPE:
                continue
            if layer.index < end:
                sliced(layer.index, layer.index + 1)
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

