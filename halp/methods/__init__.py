"""Planners: pure functions from (graph, cluster, latency, method options) to a Plan.

One module per method. `make_plan` dispatches on the scenario's `method.name`; `prepare`
builds what every planner needs from a scenario (model, graph, cluster, latency model).

Devices' memory limits (`devices[].memory`, `halp.memory`): a plan that needs more than a
device has is never returned. DeepThings and offload choose among their own candidates only
those that fit; HALP, when a secondary cannot hold its part, tries leaving the classifier to
the host; then, for every method that shares work, a secondary whose need is still too large
is left out and the method plans again without it. A plan that needs more than the host has
is refused in one line (the device, its need, its limit).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from halp.cluster import Cluster
from halp.errors import PlanError
from halp.latency.model import LatencyModel
from halp.memory import Excess, excesses, plan_memory
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
    """The plan of `method` (a scenario's method config) for one model on one cluster, within
    the devices' memory limits (module docstring)."""
    if not cluster.memory_limited:
        return _plan_for(method, graph, cluster, latency, model)
    left_out: list[str] = []
    while True:
        first: list[Excess] | None = None
        for config in (method, *_lighter(method)):
            result = _plan_for(config, graph, cluster, latency, model)
            over = excesses(plan_memory(result, graph), cluster)
            if not over:
                if left_out:
                    result.meta["left_out_for_memory"] = left_out
                return result
            first = over if first is None else first
            if any(e.device == cluster.host for e in over):
                break  # the lighter configurations only lighten the secondaries
        assert first is not None
        hosts = [e for e in first if e.device == cluster.host]
        if hosts or not _can_leave_out(method, [e.device for e in first]):
            raise PlanError((hosts or first)[0].refusal(result.method))
        left_out += [e.device for e in first]
        cluster = cluster.only([d for d in cluster.secondaries if d not in left_out])
        latency = LatencyModel(cluster)


def _lighter(method: PlannedMethod) -> list[PlannedMethod]:
    """Configurations of `method` that put less on the secondaries, tried (in order) when a
    secondary cannot hold its part: HALP without sharing the classifier (its weights are most
    of VGG-16's), before leaving a secondary out."""
    if isinstance(method, HalpMethod) and method.split_classifier and method.name == "halp":
        return [method.model_copy(update={"split_classifier": False})]
    return []


def _can_leave_out(method: PlannedMethod, devices: list[str]) -> bool:
    """Can `method` plan again without these secondaries? Those that share work can, unless
    the scenario names one of them (offload's `device`)."""
    if isinstance(method, OffloadMethod):
        return method.device not in devices
    return isinstance(method, HalpMethod | ModnnMethod | DeepthingsMethod)


def _plan_for(method: PlannedMethod, graph: ModelGraph, cluster: Cluster, latency: LatencyModel,
              model: str) -> Plan:
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
