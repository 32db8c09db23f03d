"""The seeded weights and input torchvision's reference outputs were computed with
(tests/data/torchvision_reference.json): one rule, used by the fixture's generator and by its
test, so that the test rebuilds exactly the state_dict torchvision ran.

Values are drawn in float64 and rounded to float32, which gives the same bits on every machine
(see `halp.model.zoo._randomise`); every tensor is drawn in the order of the fixture's keys.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

REFERENCE = Path(__file__).resolve().parent / "data" / "torchvision_reference.json"
WEIGHTS_SEED = 20240601
INPUT_SEED = 7

# One state_dict entry as the fixture stores it: key, shape, dtype ("float32", "int64").
Entry = tuple[str, list[int], str]


def load_reference() -> dict[str, Any]:
    return json.loads(REFERENCE.read_text())


def layout_of(state: dict[str, torch.Tensor]) -> list[Entry]:
    """A state_dict's keys in order, with their shapes and dtypes, as the fixture holds them."""
    return [(key, list(value.shape), str(value.dtype).removeprefix("torch."))
            for key, value in state.items()]


def seeded_state_dict(layout: list[Entry], seed: int = WEIGHTS_SEED) -> dict[str, torch.Tensor]:
    """A state_dict of `layout` with values that make every layer matter: convolution and
    linear weights scaled like He initialisation (so activations neither vanish nor blow up
    layer after layer), batch-norm scales near 1, shifts and running means near 0, running
    variances in [0.5, 1.5), and counters (`num_batches_tracked`) 0."""
    generator = torch.Generator().manual_seed(seed)

    def normal(shape: list[int]) -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float64)

    state: dict[str, torch.Tensor] = {}
    for key, shape, dtype in layout:
        if dtype != "float32":
            state[key] = torch.zeros(shape, dtype=getattr(torch, dtype))
            continue
        if key.endswith("running_var"):
            value = 0.5 + torch.rand(shape, generator=generator, dtype=torch.float64)
        elif key.endswith("running_mean") or key.endswith("bias"):
            value = 0.1 * normal(shape)
        elif len(shape) >= 2:  # a convolution's or a linear layer's weight
            value = normal(shape) * math.sqrt(2.0 / math.prod(shape[1:]))
        else:  # a batch norm's scale
            value = 1.0 + 0.1 * normal(shape)
        state[key] = value.to(torch.float32)
    return state


def seeded_input(resolution: int, seed: int = INPUT_SEED) -> torch.Tensor:
    """One image of `resolution` x `resolution`, standard normal, as float32."""
    generator = torch.Generator().manual_seed(seed)
    shape = (1, 3, resolution, resolution)
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(torch.float32)
