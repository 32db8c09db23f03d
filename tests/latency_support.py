"""Tiny real conv nets to profile in tests: what their ops are, and those ops timed."""

from __future__ import annotations

import torch
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


class Residual(nn.Module):
    """A ResNet basic block: two 3x3 convolutions and the identity, added."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + x)


class Inception(nn.Module):
    """An inception module: a 1x1, a 3x3 and a pooled branch, concatenated along channels."""

    def __init__(self, channels: int):
        super().__init__()
        self.one = nn.Conv2d(channels, 8, 1)
        self.three = nn.Sequential(nn.Conv2d(channels, 8, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1))
        self.pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(channels, 8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.one(x), self.three(x), self.pool(x)], 1)


def tiny_dag_graph() -> ModelGraph:
    """A tiny DAG: a residual block (an add) and an inception module (a concatenation)."""
    module = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), Residual(16), nn.MaxPool2d(2), Inception(16),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    ).eval()
    return trace_model(module, (3, 48, 48), "tiny_dag")


def tiny_dag_samples(graph: ModelGraph) -> list[Sample]:
    return measure_graphs([graph], heights=(1.0, 1 / 2, 1 / 4), repeats=3, max_run=2, seed=0)
