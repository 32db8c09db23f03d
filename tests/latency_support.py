"""A tiny real conv net to profile in tests: what its ops are, and those ops timed."""

from __future__ import annotations

from torch import nn

from halp.latency.ops import Sample
from halp.latency.timing import measure_graphs
from halp.model.graph import ModelGraph
from halp.model.trace import trace_model


def tiny_graph() -> ModelGraph:
    module = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=32), nn.ReLU(),
        nn.Conv2d(32, 64, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    ).eval()
    return trace_model(module, (3, 64, 64), "tiny")


def tiny_samples(graph: ModelGraph) -> list[Sample]:
    """The ops of `graph` timed quickly: three slice heights, runs of up to two segments."""
    return measure_graphs([graph], heights=(1.0, 1 / 2, 1 / 4), repeats=3, max_run=2, seed=0)
