"""Planners: pure functions from (graph, cluster, latency, method options) to a Plan.

One module per method. `make_plan` dispatches on the scenario's `method.name`; `prepare`
builds what every planner needs from a scenario (model, graph, cluster, latency model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from halp.cluster import Cluster
from halp.errors import PlanError
from halp.latency.model import LatencyModel
from halp.methods import deepthings, erl, halp, modnn, offload, standalone
from halp.model.graph import ModelGraph
from halp.model.trace import trace_model
from halp.model.zoo import ModelSpec, build_model
from halp.plan import Plan, validate
from halp.scenario import (
    DeepthingsMethod,
    ErlMethod,
    HalpMethod,
    ModnnMethod,
    OffloadMethod,
    Scenario,
    SelectMethod,
    StandaloneMethod,
)


@dataclass
class Prepared:
    """Everything a planner and a backend need for one model on one cluster."""

    spec: ModelSpec
    model: nn.Module
    graph: ModelGraph
    cluster: Cluster
    latency: LatencyModel


def prepare(scenario: Scenario, spec: ModelSpec | None = None, cluster: Cluster | None = None) -> Prepared:
    spec = spec or scenario.model_spec()
    model = build_model(spec)
    graph = trace_model(model, spec.shape, spec.variant)
    cluster = cluster or scenario.cluster()
    return Prepared(spec, model, graph, cluster, LatencyModel(cluster))


_BUILT: dict[ModelSpec, Prepared] = {}


def prepare_reusing(scenario: Scenario) -> Prepared:
    """`prepare`, with each model built once per process: sweeps and figures plan many
    variants of one scenario, and building VGG-16 costs more than planning it."""
    spec = scenario.model_spec()
    base = _BUILT.get(spec)
    if base is None:
        base = _BUILT[spec] = prepare(scenario)
    cluster = scenario.cluster()
    return Prepared(base.spec, base.model, base.graph, cluster, LatencyModel(cluster))


# The method configs a planner answers (`select` is a policy over these, not a planner).
PlannedMethod = (StandaloneMethod | HalpMethod | ModnnMethod | DeepthingsMethod | OffloadMethod
                 | ErlMethod)


def plan_for(method: PlannedMethod, graph: ModelGraph, cluster: Cluster, latency: LatencyModel,
             model: str) -> Plan:
    """The plan of `method` (a scenario's method config) for one model on one cluster."""
    if isinstance(method, StandaloneMethod):
        result = standalone.plan(graph, cluster, model)
    elif isinstance(method, HalpMethod):
        result = halp.plan(graph, cluster, latency, model, cuts=method.cuts,
                           max_layers_per_segment=method.max_layers_per_segment,
                           equal=method.name == "equal", split_classifier=method.split_classifier)
    elif isinstance(method, ModnnMethod):
        result = modnn.plan(graph, cluster, latency, model)
    elif isinstance(method, DeepthingsMethod):
        result = deepthings.plan(graph, cluster, latency, model, grid=method.grid,
                                 fused_layers=method.fused_layers)
    elif isinstance(method, OffloadMethod):
        result = offload.plan(graph, cluster, latency, model, cut=method.cut,
                              device=method.device)
    elif isinstance(method, ErlMethod):
        result = erl.plan(graph, cluster, latency, model, Path(method.policy))
    else:
        raise PlanError(f"no planner for method {getattr(method, 'name', method)!r}")
    validate(result, graph)
    return result


def make_plan(scenario: Scenario, prepared: Prepared | None = None) -> Plan:
    p = prepared or prepare(scenario)
    method = scenario.method
    if isinstance(method, SelectMethod):
        raise PlanError("select chooses a plan per request: serve it with "
                        "halp.serving.policy_for(scenario)")
    if isinstance(method, ErlMethod):  # the policy file is named relative to the scenario
        method = method.model_copy(update={"policy": str(scenario.resolve(method.policy))})
    return plan_for(method, p.graph, p.cluster, p.latency, p.spec.variant)
