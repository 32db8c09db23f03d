"""Dynamic model selection: the most accurate variant that still meets the deadline.

Before each request the host estimates each link's bandwidth from the transfers it has seen
(never the future), predicts every variant's latency with the latency model on the plan the
base method makes for that bandwidth, and serves the most accurate variant predicted to meet
the deadline, or the fastest when none does. Plans are cached per bandwidth bucket (estimates
within `bucket` of each other share them), but every prediction is made at the estimate itself:
a plan predicted at its bucket's rate is off by up to half a bucket, enough to pick a variant
that misses a deadline by a fraction of a millisecond. For HALP the segment cuts of each variant
are chosen once, at the scenario's nominal bandwidth, and only the split ratios follow the
estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from pydantic import TypeAdapter

from halp.accuracy import known_variants, spec_of, top1
from halp.cluster import Cluster
from halp.latency.model import LatencyModel
from halp.methods import PlannedMethod, Prepared, plan_for, prepare
from halp.network import wire_bits
from halp.plan import Plan
from halp.policy import Observation, Served
from halp.scenario import ErlMethod, HalpMethod, MethodConfig, Scenario, SelectMethod
from halp.schedule import estimate

MOBILENET_VARIANTS = [v for v in known_variants() if v != "vgg16"]


MIN_BYTES = 16_384  # smaller transfers are not evidence of a link's rate (see BandwidthEstimator)


class BandwidthEstimator:
    """Per link: the bits of the last `window` transfers (on the wire, frames included, as the
    latency model charges them) over the time they took on the wire (their per-message
    cost and delay taken off). That is the time-weighted mean rate, so one short transfer
    cannot swing it. Transfers under `min_bytes` are not counted: their time is per-message
    cost and token-bucket burst (a shaped link lets ~15 kB through at line rate), so after a
    drop a plan's few classifier features would report the old rate. A link not observed
    within `horizon_s` is taken at its nominal rate: optimistic, so a quiet link is tried, and
    so measured, again."""

    def __init__(self, nominal_bps: dict[str, float], fixed_s: float, window: int,
                 horizon_s: float = float("inf"), min_bytes: int = MIN_BYTES,
                 per_byte_s: float = 0.0):
        self.nominal = dict(nominal_bps)
        self.fixed_s = fixed_s  # a transfer's time beside its bits: message overhead and delay
        self.per_byte_s = per_byte_s  # and per byte, signing and checking it
        self.window = window
        self.horizon_s = horizon_s
        self.min_bytes = min_bytes

    def estimate(self, observed: list[Observation], now_s: float = float("inf")) -> dict[str, float]:
        bits: dict[str, float] = {}
        seconds: dict[str, float] = {}
        counts: dict[str, int] = {}
        for obs in reversed(observed):
            if obs.time_s < now_s - self.horizon_s:
                break  # observations arrive in time order: the rest are older still
            if (obs.link not in self.nominal or obs.bytes < self.min_bytes
                    or counts.get(obs.link, 0) >= self.window):
                continue
            wire = obs.duration_s - self.fixed_s - self.per_byte_s * obs.bytes
            if wire <= 0:
                continue
            counts[obs.link] = counts.get(obs.link, 0) + 1
            bits[obs.link] = bits.get(obs.link, 0.0) + wire_bits(obs.bytes)
            seconds[obs.link] = seconds.get(obs.link, 0.0) + wire
        return {link: bits[link] / seconds[link] if link in bits else rate
                for link, rate in self.nominal.items()}


@dataclass
class Candidate:
    variant: str
    plan: Plan
    prepared: Prepared
    predicted_s: float
    top1: float


def choose(candidates: list[Candidate], deadline_s: float | None) -> Candidate:
    """The most accurate candidate predicted to meet the deadline, else the fastest."""
    meeting = [c for c in candidates if deadline_s is None or c.predicted_s <= deadline_s]
    if meeting:
        return max(meeting, key=lambda c: (c.top1, -c.predicted_s))
    return min(candidates, key=lambda c: (c.predicted_s, -c.top1))


class SelectPolicy:
    """Holds the variants' models, their fixed cuts and a plan cache: state across requests."""

    def __init__(self, scenario: Scenario):
        method = scenario.method
        assert isinstance(method, SelectMethod)
        self.method = method
        self.deadline_s = scenario.workload.deadline
        self.cluster: Cluster = scenario.cluster()
        self.variants = method.variants or MOBILENET_VARIANTS
        self.prepared = {v: prepare(scenario, spec_of(v, scenario.seed), self.cluster) for v in self.variants}
        latency = self.latency = LatencyModel(self.cluster)
        overhead, per_byte = latency.message_terms()
        self.estimator = BandwidthEstimator(self.cluster.bandwidth_bps, overhead + self.cluster.delay_s,
                                            method.window, method.horizon, per_byte_s=per_byte)
        self.base = _base_config(method.base)
        self.cuts: dict[str, list[int] | None] = {}
        self.cache: dict[tuple, list[Candidate]] = {}
        if method.base in ("halp", "equal"):
            for v, prep in self.prepared.items():
                nominal = plan_for(self.base, prep.graph, self.cluster, latency, v)
                self.cuts[v] = sorted({b for seg in nominal.segments for b in seg})

    def candidates(self, bandwidth_bps: dict[str, float]) -> list[Candidate]:
        step = math.log(self.method.bucket)
        key = tuple(sorted((k, round(math.log(v) / step)) for k, v in bandwidth_bps.items()))
        if key not in self.cache:
            cluster = self.cluster.with_bandwidth({k: math.exp(b * step) for k, b in key})
            latency = self.latency.at(cluster)
            out = []
            for v, prep in self.prepared.items():
                config = self.base
                if isinstance(config, HalpMethod):
                    config = config.model_copy(update={"cuts": self.cuts[v]})
                plan = plan_for(config, prep.graph, cluster, latency, v)
                predicted = estimate(plan, prep.graph, latency).makespan
                out.append(Candidate(v, plan, prep, predicted, top1(v) or 0.0))
            self.cache[key] = out
        return self.cache[key]

    def serve(self, request: int, now_s: float, observed: list[Observation]) -> Served:
        bandwidth = self.estimator.estimate(observed, now_s)
        latency = self.latency.at(self.cluster.with_bandwidth(bandwidth))
        candidates = [replace(c, predicted_s=estimate(c.plan, c.prepared.graph, latency).makespan)
                      for c in self.candidates(bandwidth)]
        deadline = self.deadline_s
        pick = choose(candidates, None if deadline is None else deadline * (1.0 - self.method.margin))
        return Served(pick.plan, pick.prepared, predicted_s=pick.predicted_s, top1=pick.top1,
                      extra={"variant": pick.variant, "bandwidth_estimate_bps": bandwidth})

    def served(self) -> list[Served]:
        return [Served(c.plan, c.prepared, c.predicted_s, c.top1, {"variant": c.variant})
                for c in self.candidates(self.cluster.bandwidth_bps)]


_METHODS = TypeAdapter(MethodConfig)


def _base_config(name: str) -> PlannedMethod:
    """The base method (`SelectMethod.base`) with its default options."""
    config = _METHODS.validate_python({"name": name})
    assert not isinstance(config, SelectMethod | ErlMethod)  # base names neither
    return config
