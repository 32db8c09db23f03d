"""A worker builds each model once, keeps the recent ones, and installs only plans that fit."""

from __future__ import annotations

import dataclasses

import pytest
from runtime_support import whole_model_on

from halp.errors import PlanError
from halp.model.graph import region
from halp.model.zoo import ModelSpec, model_digest
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
    installed, digest = install(models, SPEC, plan)
    assert installed.plan is plan and installed.graph is graph
    assert digest == models.get(SPEC).digest


def test_a_plan_for_another_model_or_that_does_not_fit_is_refused():
    models = ModelCache(None)
    graph = models.get(SPEC).graph
    plan = whole_model_on(graph, SPEC.variant, "w1")
    with pytest.raises(PlanError, match="plan is for 0.25_128, the spec builds 0.5_128"):
        install(models, dataclasses.replace(SPEC, width=0.5), plan)
    half = dataclasses.replace(plan.ops[1], region=region((0, 64), (0, 128)), bytes=98304)
    torn = dataclasses.replace(plan, ops=[plan.ops[0], half, *plan.ops[2:]])
    with pytest.raises(PlanError, match="do not cover"):
        install(models, SPEC, torn)
