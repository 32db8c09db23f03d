"""Run stages of a model on a region of a feature map: the compute step of every device.

This is a pure function of (graph, stages, region held, tensor, region wanted): no sockets, no
plan. The in-process verifier, the emulator's workers and the Raspberry Pis all call
`run_region`, so a slice is computed the same way everywhere. A block runs its ops in order,
each on exactly the region its consumers read (a skip path is cropped to the rows its partner
computes). Padding is applied by hand, and only where the region touches the true border of
the map, so slices reproduce the monolithic output exactly.

An op runs through its *runner* (`ModelGraph.runners`, built by `halp.model.trace`): a function
of (its inputs, each holding exactly the region the op reads, that region, the region wanted).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from halp.errors import PlanError
from halp.model.graph import RESHAPE, LayerSpec, ModelGraph, Region, region

Runner = Callable[[Sequence[torch.Tensor], Region, Region], torch.Tensor]


def crop(x: torch.Tensor, held: Region, want: Region) -> torch.Tensor:
    """The part `want` of a tensor that holds `held` (batch x ... x H x W, or batch x F: a
    flat map's rows are its features)."""
    if want == held:
        return x
    if want.empty:  # nothing, in the shape a window of zero rows (at a padded border) reads
        return _nothing(x, want)
    if not held.contains(want):
        raise PlanError(f"region {want} is not inside the held region {held}")
    r0, c0 = want.rows.start - held.rows.start, want.cols.start - held.cols.start
    if x.dim() < 4:
        return x[:, r0:r0 + want.rows.size]
    return x[..., r0:r0 + want.rows.size, c0:c0 + want.cols.size]


@torch.no_grad()
def run_region(graph: ModelGraph, start: int, stop: int, x: torch.Tensor, held: Region,
               out: Region) -> torch.Tensor:
    """Compute region `out` at boundary `stop` from `x`, which holds region `held` at `start`."""
    if not graph.runners:
        raise PlanError(f"{graph.name}: this copy of the graph has no module to run "
                        "(trace the model in this process: halp.model.trace.trace_model)")
    needed = graph.regions_needed(start, stop, out)
    if not held.contains(needed[0]):
        raise PlanError(f"layers [{start},{stop}) need {needed[0]} at boundary {start} "
                        f"to produce {out}, but only {held} is held")
    x = crop(x, held, needed[0])
    for offset, layer in enumerate(graph.layers[start:stop]):
        have, want = needed[offset], needed[offset + 1]
        if want.empty:
            x = _nothing(x, want, layer.out_shape)
        elif layer.nodes:
            x = _run_block(graph, layer, x, have, want)
        else:
            x = graph.runners[layer.name]((x,), have, want)
    return x.contiguous()


def _run_block(graph: ModelGraph, block: LayerSpec, x: torch.Tensor, have: Region,
               want: Region) -> torch.Tensor:
    _, wants = block.node_regions(want)
    values: list[torch.Tensor] = []
    for node, produced in zip(block.nodes, wants, strict=True):
        if produced.empty:
            values.append(_nothing(x, produced, node.spec.out_shape))
            continue
        reads = node.spec.needed(produced)
        inputs = [crop(x, have, reads) if i < 0 else crop(values[i], wants[i], reads)
                  for i in node.inputs]
        values.append(graph.runners[node.spec.name](inputs, reads, produced))
    return values[-1]


def _nothing(x: torch.Tensor, want: Region, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """An empty region of a map of `shape` (of `x`'s by default): zero rows, or zero columns,
    but the right channels and the other size, so that a padding window can read it."""
    if shape is not None and len(shape) < 3 or shape is None and x.dim() < 4:
        return x.new_zeros((x.shape[0], want.rows.size))
    lead = tuple(shape[:-2]) if shape is not None else tuple(x.shape[1:-2])
    return x.new_zeros((x.shape[0], *lead, want.rows.size, want.cols.size))


# ---- runners -------------------------------------------------------------------------------
def windowed(spec: LayerSpec, module: nn.Module | None = None) -> Runner:
    """A convolution or pooling window on a region: pad by hand at the map's true border only."""
    (kh, kw), (sh, sw), (ph, pw) = spec.kernel, spec.stride, spec.padding

    def run(inputs: Sequence[torch.Tensor], have: Region, want: Region) -> torch.Tensor:
        x = inputs[0]
        # Unclipped window of `want`; the parts outside the map are the real padding (or, for
        # a pooling window in ceil mode, past it: max pooling ignores them).
        top = want.rows.start * sh - ph
        bottom = (want.rows.stop - 1) * sh - ph + kh
        left = want.cols.start * sw - pw
        right = (want.cols.stop - 1) * sw - pw + kw
        pads = (max(0, -left), max(0, right - spec.in_width), max(0, -top), max(0, bottom - spec.in_height))
        if any(pads):
            x = F.pad(x, pads, value=spec.pad_value)
        if spec.kind == RESHAPE:  # padding alone: the pad above is the op
            return x
        if isinstance(module, nn.Conv2d):
            return F.conv2d(x, module.weight, module.bias, stride=(sh, sw), padding=0,
                            dilation=module.dilation, groups=module.groups)
        if spec.op in ("MaxPool2d", "max_pool2d"):
            return F.max_pool2d(x, (kh, kw), (sh, sw), padding=0)
        return F.avg_pool2d(x, (kh, kw), (sh, sw), padding=0)

    return run


def linear(spec: LayerSpec, module: nn.Linear) -> Runner:
    """A linear layer: some output features read only their rows of the weights."""

    def run(inputs: Sequence[torch.Tensor], have: Region, want: Region) -> torch.Tensor:
        if want.rows.size < spec.out_height:
            rows = slice(want.rows.start, want.rows.stop)
            bias = module.bias[rows] if module.bias is not None else None
            return F.linear(inputs[0], module.weight[rows], bias)
        return module(inputs[0])

    return run


def row_local(spec: LayerSpec, call: Callable[..., torch.Tensor]) -> Runner:
    """An op whose output rows are its input rows (elementwise, merges, channel moves)."""

    def run(inputs: Sequence[torch.Tensor], have: Region, want: Region) -> torch.Tensor:
        return crop(call(*inputs), have, want)

    return run


def whole_map(spec: LayerSpec, call: Callable[..., torch.Tensor]) -> Runner:
    """An op that reads its whole input (global pooling, flatten): run, then keep `want`."""
    produced = region((0, spec.out_height), (0, spec.out_width))

    def run(inputs: Sequence[torch.Tensor], have: Region, want: Region) -> torch.Tensor:
        return crop(call(*inputs), produced, want)

    return run


def assemble(need: Region, pieces: list[tuple[Region, torch.Tensor]]) -> torch.Tensor:
    """Stitch the blocks `pieces` (region, tensor) into one tensor holding `need`."""
    for held, x in pieces:
        if held == need:
            return x
    first = pieces[0][1]
    if first.dim() < 4:  # a flat map: features are rows
        flat = first.new_empty((first.shape[0], need.rows.size))
        for held, x in pieces:
            r0, r1 = max(need.rows.start, held.rows.start), min(need.rows.stop, held.rows.stop)
            if r0 < r1:
                flat[:, r0 - need.rows.start:r1 - need.rows.start] = \
                    x[:, r0 - held.rows.start:r1 - held.rows.start]
        return flat
    out = first.new_empty((*first.shape[:-2], need.rows.size, need.cols.size))
    for held, x in pieces:
        r0, r1 = max(need.rows.start, held.rows.start), min(need.rows.stop, held.rows.stop)
        c0, c1 = max(need.cols.start, held.cols.start), min(need.cols.stop, held.cols.stop)
        if r0 >= r1 or c0 >= c1:
            continue
        out[..., r0 - need.rows.start:r1 - need.rows.start, c0 - need.cols.start:c1 - need.cols.start] = \
            x[..., r0 - held.rows.start:r1 - held.rows.start, c0 - held.cols.start:c1 - held.cols.start]
    return out
