"""What a worker has built and installed: models by spec, plans checked against them.

No sockets and no threads of its own. On a worker the compute thread alone builds models
(`ModelCache`) and checks plans (`install`), because building a model takes the CPU that
requests need; the worker's plan table (plan id -> `Installed`) is written by the compute
thread and read by the I/O and sender threads.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from halp.errors import PlanError
from halp.model.graph import ModelGraph
from halp.model.trace import trace_model
from halp.model.zoo import ModelSpec, build_model, model_digest
from halp.plan import Plan, validate
from halp.runtime.files import localise

MAX_MODELS = 16


@dataclass(frozen=True)
class Installed:
    """A plan this worker can run, with the graph of the model it was checked against."""

    plan: Plan
    graph: ModelGraph


@dataclass(frozen=True)
class BuiltModel:
    module: torch.nn.Module
    graph: ModelGraph
    digest: str  # `model_digest`: the host checks that it holds the same numbers


class ModelCache:
    """Models built from their specs, kept from run to run: a spec (seed included) always
    builds the same weights, so each is built once; past `limit`, the least recently used goes.
    `files` is this device's model file store (`halp.runtime.files`)."""

    def __init__(self, files: Path | None, limit: int = MAX_MODELS):
        self.files, self.limit = files, limit
        self._built: OrderedDict[ModelSpec, BuiltModel] = OrderedDict()

    def get(self, spec: ModelSpec) -> BuiltModel:
        if spec in self._built:
            self._built.move_to_end(spec)
            return self._built[spec]
        module = build_model(localise(spec, self.files))
        graph = trace_model(module, spec.shape, spec.variant)
        built = BuiltModel(module, graph, model_digest(module))
        self._built[spec] = built
        while len(self._built) > self.limit:
            self._built.popitem(last=False)
        return built


def install(models: ModelCache, spec: ModelSpec, plan: Plan) -> tuple[Installed, str]:
    """`plan` checked against the model `spec` builds, and that model's digest. Raises if the
    model cannot be built, or the plan is for another model or does not fit it."""
    built = models.get(spec)
    if plan.model != spec.variant:
        raise PlanError(f"plan is for {plan.model}, the spec builds {spec.variant}")
    validate(plan, built.graph)
    return Installed(plan, built.graph), built.digest
