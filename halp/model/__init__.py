"""Models and their layer math: the zoo, the ModelGraph, and slice execution."""

from halp.model.graph import LayerSpec, ModelGraph, Region
from halp.model.zoo import ModelSpec, build_model

__all__ = ["LayerSpec", "ModelGraph", "ModelSpec", "Region", "build_model"]
