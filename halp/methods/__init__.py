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
from halp.model.graph import ModelGraph
from halp.model.zoo import ModelSpec, build_model
from halp.plan import Plan, validate
from halp.scenario import Scenario


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
    graph = ModelGraph.from_module(model, spec.shape, spec.variant)
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


def plan_for(method: object, graph: ModelGraph, cluster: Cluster, latency: LatencyModel,
             model: str) -> Plan:
    """The plan of `method` (a scenario's method config) for one model on one cluster."""
    from halp.methods import deepthings, halp, modnn, offload, standalone

    name = method.name
    if name == "standalone":
        result = standalone.plan(graph, cluster, model)
    elif name in ("halp", "equal"):
        result = halp.plan(graph, cluster, latency, model, cuts=method.cuts,
                           max_layers_per_segment=method.max_layers_per_segment,
                           equal=name == "equal", split_classifier=method.split_classifier)
    elif name == "modnn":
        result = modnn.plan(graph, cluster, latency, model)
    elif name == "deepthings":
        result = deepthings.plan(graph, cluster, latency, model, grid=method.grid,
                                 fused_layers=method.fused_layers)
    elif name == "offload":
        result = offload.plan(graph, cluster, latency, model, cut=method.cut,
                              device=method.device)
    elif name == "erl":
        from halp.methods import erl

        result = erl.plan(graph, cluster, latency, model, Path(method.policy))
    else:
        raise PlanError(f"no planner for method {name!r}")
    validate(result, graph)
    return result


def make_plan(scenario: Scenario, prepared: Prepared | None = None) -> Plan:
    p = prepared or prepare(scenario)
    method = scenario.method
    if method.name == "erl":  # the policy file is named relative to the scenario
        method = method.model_copy(update={"policy": str(scenario.resolve(method.policy))})
    return plan_for(method, p.graph, p.cluster, p.latency, p.spec.variant)
