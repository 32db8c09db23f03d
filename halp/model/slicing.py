"""Run a fused run of layers on a region of a feature map: the compute step of every device.

This is a pure function of (layers, region held, tensor, region wanted): no sockets, no plan.
The in-process verifier, the emulator's workers and the Raspberry Pis all call it, so a
slice is computed the same way everywhere. Padding is applied by hand, and only where the
region touches the true border of the map, so slices reproduce the monolithic output exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from halp.errors import PlanError
from halp.model.graph import CONV, DWCONV, POOL, ModelGraph, Region, region


def crop(x: torch.Tensor, held: Region, want: Region) -> torch.Tensor:
    """The part `want` of a tensor that holds `held` (batch x C x H x W, or batch x F: a flat
    map's rows are its features)."""
    if want == held:
        return x
    if not held.contains(want):
        raise PlanError(f"region {want} is not inside the held region {held}")
    r0, c0 = want.rows.start - held.rows.start, want.cols.start - held.cols.start
    if x.dim() != 4:
        return x[:, r0:r0 + want.rows.size]
    return x[:, :, r0:r0 + want.rows.size, c0:c0 + want.cols.size]


@torch.no_grad()
def run_region(graph: ModelGraph, start: int, stop: int, x: torch.Tensor, held: Region,
               out: Region) -> torch.Tensor:
    """Compute region `out` at boundary `stop` from `x`, which holds region `held` at `start`."""
    needed = graph.regions_needed(start, stop, out)
    if not held.contains(needed[0]):
        raise PlanError(f"layers [{start},{stop}) need {needed[0]} at boundary {start} "
                        f"to produce {out}, but only {held} is held")
    x = crop(x, held, needed[0])
    for offset, layer in enumerate(graph.layers[start:stop]):
        module = graph.modules[layer.index]
        have, want = needed[offset], needed[offset + 1]
        if isinstance(module, nn.Linear) and want.rows.size < layer.out_height:
            rows = slice(want.rows.start, want.rows.stop)  # some output features: their weights
            bias = module.bias[rows] if module.bias is not None else None
            x = F.linear(x, module.weight[rows], bias)
            continue
        if not layer.spatial or layer.kind not in (CONV, DWCONV, POOL):
            x = module(x)  # elementwise on exactly `have`, or a whole-map layer
            produced = have if layer.spatial else region((0, layer.out_height), (0, layer.out_width))
            x = crop(x, produced, want)
            continue
        x = _windowed(layer, module, x, have, want)
    return x.contiguous()


def _windowed(layer, module: nn.Module, x: torch.Tensor, have: Region, want: Region) -> torch.Tensor:
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
    # Unclipped window of `want`; the parts outside the map are the real padding.
    top = want.rows.start * sh - ph
    bottom = (want.rows.stop - 1) * sh - ph + kh
    left = want.cols.start * sw - pw
    right = (want.cols.stop - 1) * sw - pw + kw
    pads = (max(0, -left), max(0, right - layer.in_width), max(0, -top), max(0, bottom - layer.in_height))
    if any(pads):
        x = F.pad(x, pads, value=layer.pad_value)
    if isinstance(module, nn.Conv2d):
        return F.conv2d(x, module.weight, module.bias, stride=(sh, sw), padding=0,
                        dilation=module.dilation, groups=module.groups)
    if isinstance(module, nn.MaxPool2d):
        return F.max_pool2d(x, (kh, kw), (sh, sw), padding=0)
    if isinstance(module, nn.AvgPool2d):
        return F.avg_pool2d(x, (kh, kw), (sh, sw), padding=0)
    raise PlanError(f"layer {layer.index} ({layer.op}) cannot run on a region")


def assemble(need: Region, pieces: list[tuple[Region, torch.Tensor]]) -> torch.Tensor:
    """Stitch the blocks `pieces` (region, tensor) into one tensor holding `need`."""
    for held, x in pieces:
        if held == need:
            return x
    first = pieces[0][1]
    if first.dim() != 4:  # a flat map: features are rows
        flat = first.new_empty((first.shape[0], need.rows.size))
        for held, x in pieces:
            r0, r1 = max(need.rows.start, held.rows.start), min(need.rows.stop, held.rows.stop)
            if r0 < r1:
                flat[:, r0 - need.rows.start:r1 - need.rows.start] = \
                    x[:, r0 - held.rows.start:r1 - held.rows.start]
        return flat
    out = first.new_empty((first.shape[0], first.shape[1], need.rows.size, need.cols.size))
    for held, x in pieces:
        r0, r1 = max(need.rows.start, held.rows.start), min(need.rows.stop, held.rows.stop)
        c0, c1 = max(need.cols.start, held.cols.start), min(need.cols.stop, held.cols.stop)
        if r0 >= r1 or c0 >= c1:
            continue
        out[:, :, r0 - need.rows.start:r1 - need.rows.start, c0 - need.cols.start:c1 - need.cols.start] = \
            x[:, :, r0 - held.rows.start:r1 - held.rows.start, c0 - held.cols.start:c1 - held.cols.start]
    return out
