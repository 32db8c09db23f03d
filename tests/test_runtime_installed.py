"""A worker builds each model once, keeps the recent ones, installs only plans that fit, and
holds only the weights of the stages its installed plans compute on its device."""

from __future__ import annotations

import dataclasses
from itertools import chain

import pytest
import torch
from runtime_support import two_segments, whole_model_on

import halp.runtime.installed
from halp.errors import BackendError, ModelError, PlanError
from halp.model.graph import ModelGraph, region
from halp.model.slicing import run_region
from halp.model.trace import trace_model
from halp.model.zoo import ModelSpec, build_model, model_digest
from halp.runtime.installed import ModelCache, install

SPEC = ModelSpec("mobilenet_v1", width=0.25, resolution=128, seed=3)


def test_a_spec_is_built_once_and_the_least_recently_used_goes_first():
    models = ModelCache(None, limit=2)
    first = models.get(SPEC)
    assert models.get(SPEC) is first
    assert first.digest == model_digest(first.module)
    other, third = (dataclasses.replace(SPEC, seed=s) for s in (4, 5))
    kept = models.get(other)
    assert kept.digest != first.digest  # another seed, other weights
    models.get(SPEC)  # used again: `other` is now the least recently used
    models.get(third)  # one too many: `other` goes
    assert models.get(SPEC) is first
    assert models.get(other) is not kept  # built anew


def test_a_plan_is_installed_with_the_digest_of_the_model_it_fits():
    models = ModelCache(None)
    graph = models.get(SPEC).graph
    plan = whole_model_on(graph, SPEC.variant, "w1")
    installed, digest = install(models, SPEC, plan, "w1")
    assert installed.plan is plan and installed.graph is graph
    assert digest == models.get(SPEC).digest


def test_a_plan_for_another_model_or_that_does_not_fit_is_refused():
    models = ModelCache(None)
    graph = models.get(SPEC).graph
    plan = whole_model_on(graph, SPEC.variant, "w1")
    with pytest.raises(PlanError, match="plan is for 0.25_128, the spec builds 0.5_128"):
        install(models, dataclasses.replace(SPEC, width=0.5), plan, "w1")
    half = dataclasses.replace(plan.ops[1], region=region((0, 64), (0, 128)), bytes=98304)
    torn = dataclasses.replace(plan, ops=[plan.ops[0], half, *plan.ops[2:]])
    with pytest.raises(PlanError, match="do not cover"):
        install(models, SPEC, torn, "w1")


# ---- holding only what the plans use ------------------------------------------------------
def middle_cut(graph: ModelGraph) -> int:
    cuts = graph.cut_points()
    return cuts[len(cuts) // 2]


def held_bytes(module: torch.nn.Module) -> int:
    """Bytes of the parameters and buffers a module holds."""
    return sum(t.nbytes for t in chain(module.parameters(), module.buffers()))


def outputs(graph: ModelGraph, cut: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The map at `cut` and the model's output, computed stage by stage from input `x`."""
    middle = run_region(graph, 0, cut, x, graph.full(0), graph.full(cut))
    return middle, run_region(graph, cut, len(graph), middle, graph.full(cut), graph.full(len(graph)))


def test_a_worker_keeps_only_the_weights_of_the_stages_it_computes():
    models = ModelCache(None)
    built = models.get(SPEC)
    graph, whole = built.graph, model_digest(built.module)
    cut = middle_cut(graph)
    _, digest = install(models, SPEC, two_segments(graph, SPEC.variant, cut, "w1", "h"), "w1")
    assert sum(p.nbytes for p in built.module.parameters()) == \
        sum(layer.weight_bytes for layer in graph.layers[:cut])  # the rest is gone
    assert sum(layer.weight_bytes for layer in graph.layers[cut:]) > 0
    for layer in graph.layers[cut:]:
        for op in graph.primitives(layer.index, layer.index + 1):
            if op.module:
                assert held_bytes(built.module.get_submodule(op.module)) == 0, op.module
    # the host is told the whole model's digest, as built from the spec
    assert digest == built.digest == whole == model_digest(build_model(SPEC))
    x = torch.randn(1, *graph.input_shape, generator=torch.Generator().manual_seed(1))
    reference = build_model(SPEC)
    expected = outputs(trace_model(reference, SPEC.shape, SPEC.variant), cut, x)[0]
    assert torch.equal(run_region(graph, 0, cut, x, graph.full(0), graph.full(cut)), expected)


def test_a_plan_that_needs_released_stages_has_the_model_built_again(monkeypatch):
    builds: list[ModelSpec] = []
    monkeypatch.setattr(halp.runtime.installed, "build_model",
                        lambda spec: builds.append(spec) or build_model(spec))
    models = ModelCache(None)
    built = models.get(SPEC)
    graph, cut = built.graph, middle_cut(built.graph)
    x = torch.randn(1, *graph.input_shape, generator=torch.Generator().manual_seed(1))
    reference = build_model(SPEC)
    middle, output = outputs(trace_model(reference, SPEC.shape, SPEC.variant), cut, x)
    with torch.no_grad():
        assert torch.allclose(output, reference(x), atol=1e-5)

    install(models, SPEC, two_segments(graph, SPEC.variant, cut, "w1", "h"), "w1")
    with pytest.raises(BackendError, match="weights were released"):  # never with empty weights
        run_region(graph, cut, len(graph), middle, graph.full(cut), graph.full(len(graph)))
    assert len(builds) == 1
    # a later run installs only a plan computing the other stages here: built again
    installed, digest = install(models, SPEC, two_segments(graph, SPEC.variant, cut, "h", "w1"),
                                "w1")
    assert len(builds) == 2 and digest == built.digest
    assert installed.graph is graph and built.released == frozenset(range(cut))
    got = run_region(graph, cut, len(graph), middle, graph.full(cut), graph.full(len(graph)))
    assert torch.equal(got, output)
    with pytest.raises(BackendError, match="weights were released"):
        run_region(graph, 0, cut, x, graph.full(0), graph.full(cut))


def test_plans_installed_together_keep_the_stages_each_computes():
    models = ModelCache(None)
    built = models.get(SPEC)
    graph, cut = built.graph, middle_cut(built.graph)
    first, _ = install(models, SPEC, two_segments(graph, SPEC.variant, cut, "w1", "h"), "w1")
    install(models, SPEC, two_segments(graph, SPEC.variant, cut, "h", "w1"), "w1", [first])
    assert built.released == frozenset()
    assert held_bytes(built.module) == held_bytes(build_model(SPEC))


def test_a_model_built_again_with_other_weights_is_refused(monkeypatch):
    models = ModelCache(None)
    built = models.get(SPEC)
    graph, cut = built.graph, middle_cut(built.graph)
    install(models, SPEC, two_segments(graph, SPEC.variant, cut, "w1", "h"), "w1")
    monkeypatch.setattr(halp.runtime.installed, "build_model",
                        lambda spec: build_model(dataclasses.replace(spec, seed=spec.seed + 1)))
    with pytest.raises(ModelError, match=f"built again with digest .*, first with {built.digest}"):
        install(models, SPEC, two_segments(graph, SPEC.variant, cut, "h", "w1"), "w1")
