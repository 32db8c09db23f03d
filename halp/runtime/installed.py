"""What a worker has built and installed: models by spec, plans checked against them.

No sockets and no threads of its own. On a worker the compute thread alone builds models
(`ModelCache`) and checks plans (`install`), because building a model takes the CPU that
requests need; the worker's plan table (plan id -> `Installed`) is written by the compute
thread and read by the I/O and sender threads.

A worker holds only the weights its plans use: a secondary computing VGG-16's convolutions
needs their 59 MB, not the whole model's 528 MB. Each time a plan is installed, the model
keeps the weights of the stages that an installed plan computes on this device and releases
every other tensor (`BuiltModel.hold`), and the released stages refuse to run. A plan that
needs a released stage has the model built again from its spec first: the same spec builds
the same weights, and the digest says so. The digest a worker reports is always the whole
model's, taken when it was first built.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from halp.errors import BackendError, ModelError, PlanError
from halp.model.graph import LayerSpec, ModelGraph, Region
from halp.model.slicing import Runner
from halp.model.trace import trace_model
from halp.model.zoo import ModelSpec, build_model, model_digest
from halp.plan import Compute, Plan, validate
from halp.runtime.files import localise

MAX_MODELS = 16


@dataclass(frozen=True)
class Installed:
    """A plan this worker can run, with the graph of the model it was checked against."""

    plan: Plan
    graph: ModelGraph


class BuiltModel:
    """A model built from its spec, its graph and its digest, holding the weights of only
    some of its stages (`hold`). Only the compute thread calls `hold`; what the other threads
    read of the graph (its arithmetic) never changes."""

    def __init__(self, spec: ModelSpec, files: Path | None):
        self.spec, self.files = spec, files
        self.module = build_model(localise(spec, files))
        self.graph = trace_model(self.module, spec.shape, spec.variant)
        self.digest = model_digest(self.module)  # of the whole model: the host checks it
        self.released: frozenset[int] = frozenset()  # stages whose weights are gone
        self._runners = dict(self.graph.runners)

    def hold(self, stages: set[int]) -> None:
        """Hold the weights of `stages` and no other tensor of the model: build it again
        first if some of them were released; the other stages' ops refuse to run."""
        if stages & self.released:
            self._rebuild()
        kept = {id(t) for path in _modules_of(self.graph, stages)
                for _, t in _tensors(self.module.get_submodule(path))}
        freed = 0
        for sub in self.module.modules():
            for name, t in _tensors(sub, recurse=False):
                if id(t) not in kept and t.numel():
                    freed += t.nbytes
                    setattr(sub, name, _empty(t))
        self.released = frozenset(range(len(self.graph))) - stages
        for stage in self.released:
            for op in self.graph.primitives(stage, stage + 1):
                self.graph.runners[op.name] = _refuse(op, stage)
        if freed:
            _give_back()

    def _rebuild(self) -> None:
        """Take every tensor back from a new build of the spec, checked by its digest."""
        fresh = build_model(localise(self.spec, self.files))
        digest = model_digest(fresh)
        if digest != self.digest:
            raise ModelError(f"{self.spec.variant}: built again with digest {digest}, first "
                             f"with {self.digest}: did its weights file change?")
        for path, new in fresh.named_modules():
            sub = self.module.get_submodule(path)
            for name, t in _tensors(new, recurse=False):
                setattr(sub, name, t)
        self.graph.runners.update(self._runners)
        self.released = frozenset()


def _modules_of(graph: ModelGraph, stages: Iterable[int]) -> set[str]:
    """The paths of the modules the ops of `stages` call (their weights live there)."""
    return {op.module for s in stages for op in graph.primitives(s, s + 1) if op.module}


def _tensors(module: torch.nn.Module, recurse: bool = True) -> list[tuple[str, torch.Tensor]]:
    return [*module.named_parameters(recurse=recurse, remove_duplicate=False),
            *module.named_buffers(recurse=recurse, remove_duplicate=False)]


def _empty(t: torch.Tensor) -> torch.Tensor:
    empty = torch.empty(0, dtype=t.dtype)
    return torch.nn.Parameter(empty, t.requires_grad) if isinstance(t, torch.nn.Parameter) else empty


def _refuse(op: LayerSpec, stage: int) -> Runner:
    def run(inputs: Sequence[torch.Tensor], have: Region, want: Region) -> torch.Tensor:
        raise BackendError(f"stage {stage} ({op.where or op.name}) cannot run here: its "
                           "weights were released, as no plan installed computes it here")

    return run


def _give_back() -> None:
    """Return freed memory to the system: the worker's allocator keeps it otherwise
    (`halp.latency.timing.steady_allocator`)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


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
        built = BuiltModel(spec, self.files)
        self._built[spec] = built
        while len(self._built) > self.limit:
            self._built.popitem(last=False)
        return built


def computed_stages(plan: Plan, device: str) -> set[int]:
    """The stages `device` computes in `plan`."""
    return {s for op in plan.ops if isinstance(op, Compute) and op.device == device
            for s in range(op.start, op.stop)}


def install(models: ModelCache, spec: ModelSpec, plan: Plan, device: str,
            installed: Iterable[Installed] = ()) -> tuple[Installed, str]:
    """`plan` checked against the model `spec` builds, and that model's digest. The model then
    holds the weights of the stages `device` computes in `plan` and in the plans `installed`
    on it before, and releases the others. Raises if the model cannot be built, or the plan is
    for another model or does not fit it."""
    built = models.get(spec)
    if plan.model != spec.variant:
        raise PlanError(f"plan is for {plan.model}, the spec builds {spec.variant}")
    validate(plan, built.graph)
    stages = computed_stages(plan, device).union(
        *(computed_stages(i.plan, device) for i in installed if i.graph is built.graph))
    built.hold(stages)
    return Installed(plan, built.graph), built.digest
