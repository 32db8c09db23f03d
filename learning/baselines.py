"""What a learned split is measured against, on the same task and the same states.

Every method maps the cluster at a state to a plan over the task's fixed cuts, and its latency is
a simulator run of that plan (`Task.run`):

- `equal`: every device the same share (EE);
- `speed`: shares proportional to device speed, blind to the links;
- `halp`: HALP's model-based optimiser (`optimise_split`, send orders and single rows) on each
  segment, with the current state's speeds and bandwidths;
- `policy`: a trained actor (ERL, the learner alone, the GA alone);
- `optimum`: exhaustive search of a share grid (`step` apart, host included) per segment.

The search per segment is exact for one request: a segment starts only when the host has gathered
the previous one, so the latency is the sum of the segments' times, and the best plan takes the
best shares of every segment, each found with the others held fixed. With d devices a segment has
C(1/step + d - 1, d - 1) grid points: 231 for three devices at step 0.05.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from math import comb

import numpy as np
import torch

from halp.cluster import Cluster
from halp.dynamics import State
from halp.methods.erl import Actor, PolicyFile, observation
from halp.methods.halp import optimise_split, plan_segments
from halp.plan import Plan
from sim.env import Task

Method = Callable[[Cluster], Plan]


def equal(task: Task) -> Method:
    return lambda cluster: task.plan(np.ones(task.action_dim), cluster, "equal")


def speed(task: Task) -> Method:
    def plan(cluster: Cluster) -> Plan:
        speeds = np.array([d.speed for d in cluster.devices])
        return task.plan(np.tile(speeds, task.segments), cluster, "speed")
    return plan


def halp(task: Task) -> Method:
    def plan(cluster: Cluster) -> Plan:
        latency = task.latency.at(cluster)
        splits = [optimise_split(task.graph, cluster, latency, a, b)
                  for a, b in zip(task.cuts, task.cuts[1:], strict=False)]
        return plan_segments(task.graph, cluster, latency, task.model, "halp", splits)
    return plan


def policy(task: Task, actor: Actor | PolicyFile, name: str = "erl") -> Method:
    net = actor.actor if isinstance(actor, PolicyFile) else actor

    def plan(cluster: Cluster) -> Plan:
        with torch.no_grad():
            action = net(torch.from_numpy(observation(cluster))).numpy()
        return task.plan(action, cluster, name)
    return plan


def latencies(task: Task, method: Method, states: list[State]) -> list[float]:
    """The simulated latency of `method`'s plan at each state."""
    out = []
    for state in states:
        cluster = task.at(state)
        out.append(task.run(method(cluster), cluster))
    return out


def share_grid(devices: int, step: float) -> np.ndarray:
    """Every vector of `devices` non-negative multiples of `step` summing to one."""
    n = round(1 / step)
    points = [c for c in itertools.product(range(n + 1), repeat=devices - 1) if sum(c) <= n]
    grid = np.array([[*c, n - sum(c)] for c in points], dtype=np.float64) / n
    assert len(grid) == comb(n + devices - 1, devices - 1)
    return grid


def optimum(task: Task, state: State, step: float = 0.05) -> tuple[float, np.ndarray]:
    """The lowest simulated latency over the share grid, and its shares (segments x devices)."""
    cluster = task.at(state)
    grid = share_grid(task.devices, step)
    shares = np.full((task.segments, task.devices), 1.0 / task.devices)
    for k in range(task.segments):
        times = []
        for row in grid:
            trial = shares.copy()
            trial[k] = row
            times.append(task.run(task.plan(trial.ravel(), cluster), cluster))
        shares[k] = grid[int(np.argmin(times))]
    return task.run(task.plan(shares.ravel(), cluster, "optimum"), cluster), shares
