"""Execute a plan in-process on real tensors: the reference every backend must agree with.

Every Compute runs on exactly the region it reads, every Transfer copies exactly the region it
names, every Gather stitches; nothing reads a block its device does not hold.
"""

from __future__ import annotations

import torch

from halp.model.graph import ModelGraph, Region
from halp.model.slicing import assemble, crop, run_region
from halp.plan import Compute, Gather, Input, Plan, Transfer, reads, validate


def gather_inputs(op, graph: ModelGraph, blocks: dict[str, tuple[Region, torch.Tensor]]) -> tuple[Region, torch.Tensor]:
    """The region an op reads, stitched from its input blocks."""
    where = reads(op, graph)
    assert where is not None
    need = where[2]
    return need, assemble(need, [blocks[i] for i in op.inputs])


@torch.no_grad()
def execute(plan: Plan, graph: ModelGraph, x: torch.Tensor) -> torch.Tensor:
    """Run `plan` on input `x` (batch x C x H x W) and return the output block."""
    validate(plan, graph)
    blocks: dict[str, tuple[Region, torch.Tensor]] = {}
    for op in plan.ops:
        if isinstance(op, Input):
            blocks[op.id] = (op.region, x)
            continue
        need, data = gather_inputs(op, graph, blocks)
        if isinstance(op, Compute):
            blocks[op.id] = (op.out, run_region(graph, op.start, op.stop, data, need, op.out))
        elif isinstance(op, Transfer):
            blocks[op.id] = (op.region, crop(data, need, op.region).clone())
        elif isinstance(op, Gather):
            blocks[op.id] = (op.region, data.clone())
    return blocks[plan.output][1]


def max_error(plan: Plan, graph: ModelGraph, model: torch.nn.Module, seed: int = 0) -> tuple[float, float]:
    """(largest absolute error, largest absolute reference value) of `plan` on a random input."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((1, *graph.input_shape), generator=generator)
    with torch.no_grad():
        reference = model(x)
    got = execute(plan, graph, x)
    return float((got - reference).abs().max()), float(reference.abs().max())
