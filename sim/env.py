"""The environment a split policy learns in: a gymnasium `Env` whose every step is a simulator run.

Task. A scenario fixes the model, the devices, the network and the segment cuts. The cuts are
chosen once per environment, by HALP's dynamic programme (`halp.methods.halp.choose_cuts`) on the
scenario's cluster at time zero (its nominal state), and stay fixed: the policy decides only how
each segment's rows are shared. The policy file records them, so the planner uses the same.

Observation. What the host measures before a decision (`halp.methods.erl.observation`): every
device's speed factor as is (1.0 is the profile's speed, typically 0.1 to 4) and every link's
bandwidth as log10(bps) - 7 (10 Mbps is 0, 100 Mbps is 1): both already near unit scale, so the
networks need no further normalisation.

Action. Per segment, every device's share of the segment's input rows, a `Box(0, 1)` of
segments x devices numbers (host first). Any vector is projected (`halp.methods.erl.project`:
NaN and negatives to zero, each segment normalised, an all-zero segment split equally), so no
action is invalid. Shares become a HALP plan (`plan_from_shares`).

Reward. Minus the latency, in seconds, of one request running that plan on the simulator
(`sim.engine.Simulator`, the cluster held at the current state: speeds and constant link
bandwidths). When the scenario has a deadline, every second past it costs `DEADLINE_WEIGHT`
seconds more, a penalty that grows smoothly so a critic can learn it.

States. With a `dynamics` section, an episode follows it from time zero, one decision interval per
step (`halp.dynamics.Dynamics`); without one, every step draws an independent random state
(`halp.dynamics.random_state`: speeds 0.25x to 2x, bandwidth 5 to 200 Mbps log-uniform), so a
policy learns the whole state space. The action never changes the next state, so an episode is a
sequence of independent decisions; it ends (truncated) after `learning.episode_steps` steps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import gymnasium as gym
import numpy as np

from halp.cluster import Cluster
from halp.dynamics import Dynamics, State, random_state
from halp.latency.model import LatencyModel
from halp.methods.erl import observation, plan_from_shares, project
from halp.methods.halp import choose_cuts
from halp.model.graph import ModelGraph
from halp.model.trace import trace_model
from halp.model.zoo import ModelSpec, build_model
from halp.plan import Plan
from halp.scenario import Scenario
from sim.engine import Simulator

DEADLINE_WEIGHT = 1.0  # extra seconds of cost per second past the deadline
DYNAMICS, RANDOM = "dynamics", "random"

_GRAPHS: dict[ModelSpec, ModelGraph] = {}


def states_of(scenario: Scenario) -> str:
    """How an episode's states come: the scenario's dynamics, or random when it has none."""
    return DYNAMICS if scenario.dynamics is not None else RANDOM


def graph_of(spec: ModelSpec) -> ModelGraph:
    """The layer graph of a model, built once per process (the weights play no part)."""
    key = replace(spec, seed=0, weights=None)
    if key not in _GRAPHS:
        _GRAPHS[key] = trace_model(build_model(key), key.shape, key.variant)
    return _GRAPHS[key]


@dataclass
class Task:
    """What the environment and every baseline share: the graph, the nominal cluster, the fixed
    cuts, and the simulator run of a plan at a state."""

    scenario: Scenario
    graph: ModelGraph
    cluster: Cluster  # the nominal state: the scenario's cluster at time zero
    latency: LatencyModel
    cuts: list[int]

    @classmethod
    def from_scenario(cls, scenario: Scenario, cuts: list[int] | None = None,
                      max_layers_per_segment: int | None = None) -> Task:
        graph = graph_of(scenario.model_spec())
        cluster = scenario.cluster()
        latency = LatencyModel(cluster)
        if cuts is None:
            cuts = choose_cuts(graph, cluster, latency, max_layers_per_segment)
        return cls(scenario, graph, cluster, latency, list(cuts))

    @property
    def model(self) -> str:
        return self.graph.name

    @property
    def segments(self) -> int:
        return len(self.cuts) - 1

    @property
    def devices(self) -> int:
        return len(self.cluster.devices)

    @property
    def obs_dim(self) -> int:
        return self.devices + len(self.cluster.secondaries)

    @property
    def action_dim(self) -> int:
        return self.segments * self.devices

    @property
    def deadline_s(self) -> float | None:
        return self.scenario.workload.deadline

    def at(self, state: State) -> Cluster:
        """The cluster at a state; its links carry the state's bandwidth, constant."""
        return replace(state.apply(self.cluster), traces={})

    def nominal(self) -> State:
        c = self.cluster
        return State(0.0, {d.name: d.speed for d in c.devices}, dict(c.bandwidth_bps))

    def plan(self, action: np.ndarray, cluster: Cluster, method: str = "erl") -> Plan:
        shares = project(action, self.segments, self.devices)
        return plan_from_shares(self.graph, cluster, self.latency.at(cluster), self.model,
                                self.cuts, shares, method)

    def run(self, plan: Plan, cluster: Cluster, seed: int = 0) -> float:
        """The latency of one request of `plan` on the simulator, alone on `cluster`."""
        sim = Simulator(cluster, seed=seed, jitter_s=self.scenario.network.jitter, observe=False)
        sim.latency = self.latency.at(cluster)  # the same predictions, cost tables shared
        request = sim.submit(sim.compile(plan, self.graph), 0.0)
        sim.run()
        return request.latency

    def latency_of(self, action: np.ndarray, state: State, seed: int = 0) -> float:
        cluster = self.at(state)
        return self.run(self.plan(action, cluster), cluster, seed)

    def reward(self, latency_s: float) -> float:
        late = 0.0 if self.deadline_s is None else max(0.0, latency_s - self.deadline_s)
        return -(latency_s + DEADLINE_WEIGHT * late)


class SplitEnv(gym.Env):
    """Observation: speeds and log bandwidths; action: per-segment row shares; reward: minus the
    simulated latency (see the module docstring)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, task: Task | Scenario, states: str | None = None,
                 episode_steps: int | None = None):
        self.task = task if isinstance(task, Task) else Task.from_scenario(task)
        scenario = self.task.scenario
        self.states = states or states_of(scenario)
        if self.states not in (DYNAMICS, RANDOM):
            raise ValueError(f"states must be {DYNAMICS!r} or {RANDOM!r}, not {self.states!r}")
        self.episode_steps = episode_steps or scenario.learning.episode_steps
        n, m = self.task.devices, len(self.task.cluster.secondaries)
        # Speed factors up to 64x the profile; bandwidth from 1 kbps (-4) to 1 Tbps (5).
        low = np.array([0.0] * n + [-4.0] * m, dtype=np.float32)
        high = np.array([64.0] * n + [5.0] * m, dtype=np.float32)
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.action_space = gym.spaces.Box(0.0, 1.0, (self.task.action_dim,), dtype=np.float32)
        self.simulations = 0  # simulator runs so far (the learning budget)
        self._dynamics: Dynamics | None = None
        self._state = self.task.nominal()
        self._t = 0

    @property
    def state(self) -> State:
        return self._state

    def _draw(self) -> State:
        if self.states == RANDOM:
            return random_state(self.task.cluster, self.np_random)
        assert self._dynamics is not None
        return self._dynamics.advance()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._t = 0
        if self.states == DYNAMICS:
            self._dynamics = Dynamics(self.task.scenario.dynamics, self.task.cluster,
                                      int(self.np_random.integers(2**31)))
            self._state = self._dynamics.state()
        else:
            self._state = self._draw()
        return observation(self.task.at(self._state)), {"state": self._state}

    def step(self, action: np.ndarray):
        cluster = self.task.at(self._state)
        plan = self.task.plan(action, cluster)
        latency_s = self.task.run(plan, cluster, seed=int(self.np_random.integers(2**31)))
        self.simulations += 1
        info = {"latency_s": latency_s, "state": self._state,
                "shares": project(action, self.task.segments, self.task.devices)}
        self._t += 1
        self._state = self._draw()
        obs = observation(self.task.at(self._state))
        return obs, self.task.reward(latency_s), False, self._t >= self.episode_steps, info
