"""Published top-1 accuracy of the model variants, read from `halp/data/top1.yaml`."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

from halp.errors import HalpError
from halp.model.zoo import ModelSpec

_FILE = Path(__file__).parent / "data" / "top1.yaml"


@cache
def top1_table() -> dict[str, float]:
    return {str(k): float(v) for k, v in yaml.safe_load(_FILE.read_text())["top1"].items()}


def known_variants() -> list[str]:
    return list(top1_table())


def top1(variant: str) -> float | None:
    return top1_table().get(variant)


def spec_of(variant: str, seed: int = 0) -> ModelSpec:
    """"0.5_160" -> MobileNet-V1 width 0.5 at 160x160; "vgg16" -> VGG-16."""
    if variant == "vgg16":
        return ModelSpec("vgg16", seed=seed)
    try:
        width, resolution = variant.split("_")
        return ModelSpec("mobilenet_v1", float(width), int(resolution), seed=seed)
    except ValueError:
        raise HalpError(f"cannot read model variant {variant!r}; write it like '0.5_160'") from None
