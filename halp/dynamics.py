"""How a cluster changes between decisions: device speeds and link bandwidths over time.

A scenario's `dynamics` declares, per device, a random walk of its speed factor, steps at
given times, and windows of background load (which leave the device `1 - share` of its
speed); per link, a random walk of its bandwidth and steps. `states` draws the sequence of
cluster states at every decision interval from an explicit seed, so the same seed gives the
same sequence on every backend and in the learning environment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from halp.cluster import Cluster
from halp.scenario import DynamicsConfig


@dataclass(frozen=True)
class State:
    """What the host measures at one decision: speed factors and bandwidths."""

    time_s: float
    speeds: dict[str, float]
    bandwidth_bps: dict[str, float]

    def apply(self, cluster: Cluster) -> Cluster:
        return cluster.with_speeds(self.speeds).with_bandwidth(self.bandwidth_bps)


class Dynamics:
    """The evolving state (random walks carry state from one interval to the next)."""

    def __init__(self, config: DynamicsConfig | None, cluster: Cluster, seed: int):
        self.config = config or DynamicsConfig()
        self.base = cluster
        self.rng = np.random.default_rng(seed)
        self.speed = {d.name: d.speed for d in cluster.devices}
        self.bandwidth = dict(cluster.bandwidth_bps)
        self.time_s = 0.0
        for name, rule in self.config.devices.items():  # steps at time zero hold from the start
            for step in rule.steps:
                if step.at <= 0:
                    self.speed[name] = step.speed
        for name, link in self.config.links.items():
            for change in link.steps:
                if change.at <= 0:
                    self.bandwidth[name] = change.bandwidth

    def state(self) -> State:
        t = self.time_s
        speeds = {}
        for name, speed in self.speed.items():
            rule = self.config.devices.get(name)
            for load in rule.background_load if rule else []:
                if load.at <= t and (load.until is None or t < load.until):
                    speed *= 1.0 - load.share
            speeds[name] = speed
        return State(t, speeds, dict(self.bandwidth))

    def advance(self) -> State:
        """Move one decision interval on and return the new state. A step sets the value at
        its time; a random walk moves on from wherever the value is."""
        before, self.time_s = self.time_s, self.time_s + self.config.interval
        for name, rule in self.config.devices.items():
            if rule.random_walk is not None:
                w = rule.random_walk
                self.speed[name] = float(np.clip(
                    self.speed[name] + w.sigma * self.rng.standard_normal(), w.min, w.max))
            for step in rule.steps:
                if before < step.at <= self.time_s:
                    self.speed[name] = step.speed
        for name, link in self.config.links.items():
            if link.random_walk is not None:
                walk = link.random_walk
                self.bandwidth[name] = float(np.clip(
                    self.bandwidth[name] + walk.sigma * self.rng.standard_normal(), walk.min,
                    walk.max))
            for change in link.steps:
                if before < change.at <= self.time_s:
                    self.bandwidth[name] = change.bandwidth
        return self.state()


def random_state(cluster: Cluster, rng: np.random.Generator, speed_range: tuple[float, float] = (0.25, 2.0),
                 bandwidth_range_bps: tuple[float, float] = (5e6, 200e6)) -> State:
    """A state drawn uniformly (log-uniform bandwidth): for training and for evaluation sets."""
    speeds = {d.name: float(rng.uniform(*speed_range)) for d in cluster.devices}
    lo, hi = np.log(bandwidth_range_bps[0]), np.log(bandwidth_range_bps[1])
    bandwidth = {n: float(np.exp(rng.uniform(lo, hi))) for n in cluster.secondaries}
    return State(0.0, speeds, bandwidth)
