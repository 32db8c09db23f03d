"""The split-learning environment: a conforming gymnasium Env whose reward is a simulator run."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from halp.dynamics import State
from halp.methods.erl import plan_from_shares, project
from halp.scenario import parse_scenario
from learning import baselines
from sim.engine import simulate
from sim.env import DEADLINE_WEIGHT, SplitEnv, Task

SCENARIO = {
    "name": "env-test", "seed": 5, "model": {"name": "vgg16"},
    "devices": [{"name": "pi0", "role": "host", "profile": "rpi4"},
                {"name": "pi1", "profile": "rpi4", "speed": 2.0},
                {"name": "pi2", "profile": "rpi4", "speed": 0.5}],
    "network": {"kind": "star", "bandwidth": "100Mbps", "links": {"pi2": "40Mbps"}},
    "method": {"name": "halp"},
    "learning": {"episode_steps": 4},
}
_TASKS: dict = {}


def task(**changes) -> Task:
    """The test task (cuts chosen once per module), the scenario changed as asked."""
    base = parse_scenario(SCENARIO)
    if "base" not in _TASKS:
        _TASKS["base"] = Task.from_scenario(base)
    scenario = base.with_values(changes) if changes else base
    t = _TASKS["base"]
    return Task(scenario, t.graph, scenario.cluster(), t.latency, t.cuts)


def test_split_env_passes_gymnasiums_env_checker():
    env = SplitEnv(task())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no render modes" and the like
        check_env(env, skip_render_check=True)


def test_spaces_follow_devices_and_segments():
    t = task()
    env = SplitEnv(t)
    assert t.segments >= 2  # HALP's cuts on VGG-16: several segments to share
    assert env.observation_space.shape == (3 + 2,)
    assert env.action_space.shape == (t.segments * 3,)


@pytest.mark.parametrize("garbage", [np.nan, np.inf, -np.inf, -5.0, 0.0, 1e30])
def test_garbage_actions_are_projected_not_crashed_on(garbage):
    # Prepare
    env = SplitEnv(task())
    env.reset(seed=0)
    action = np.full(env.action_space.shape, garbage, dtype=np.float64)
    action[0] = 0.3
    # Execute
    _, reward, _, _, info = env.step(action)
    # Assert
    shares = info["shares"]
    assert np.isfinite(reward) and reward < 0
    assert (shares >= 0).all() and np.allclose(shares.sum(axis=1), 1.0)


def test_project_handles_every_kind_of_garbage():
    shares = project(np.array([np.nan, -1, np.inf, 0, 0, 0, 2, 2, 0]), 3, 3)
    assert np.allclose(shares, [[0, 0, 1], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0]])


def test_reward_is_minus_a_real_simulated_latency():
    # Prepare
    t = task()
    env = SplitEnv(t)
    env.reset(seed=3)
    state = env.state
    action = np.linspace(0.1, 0.9, t.action_dim)
    # Execute
    _, reward, _, _, info = env.step(action)
    # Assert: the same plan simulated independently on the cluster at that state
    cluster = t.at(state)
    plan = plan_from_shares(t.graph, cluster, t.latency.at(cluster), t.model, t.cuts,
                            project(action, t.segments, t.devices))
    assert reward == pytest.approx(-simulate(cluster, t.graph, plan, [0.0])[0], rel=1e-12)
    assert info["latency_s"] == pytest.approx(-reward)


def test_a_deadline_adds_a_penalty_past_it():
    t = task(**{"workload.deadline": 0.5})
    env = SplitEnv(t)
    env.reset(seed=3)
    _, reward, _, _, info = env.step(np.full(t.action_dim, 0.5))
    late = info["latency_s"] - 0.5
    assert late > 0
    assert reward == pytest.approx(-(info["latency_s"] + DEADLINE_WEIGHT * late))


def test_episodes_are_seeded_and_truncated():
    env = SplitEnv(task())
    action = np.full(env.action_space.shape, 0.5)
    first = [env.reset(seed=11)[0]] + [env.step(action)[0] for _ in range(3)]
    again = [env.reset(seed=11)[0]] + [env.step(action)[0] for _ in range(3)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    *_, truncated, _ = env.step(action)
    assert truncated  # episode_steps: 4


def test_states_follow_the_scenario_dynamics():
    # Prepare: pi1 loses three quarters of its CPU from 2 s, pi2's link drops at 3 s.
    t = task(dynamics={"interval": "1s",
                       "devices": {"pi1": {"background_load": [{"at": "2s", "share": 0.75}]}},
                       "links": {"pi2": {"steps": [{"at": "3s", "bandwidth": "5Mbps"}]}}})
    env = SplitEnv(t, episode_steps=5)
    # Execute
    obs, _ = env.reset(seed=0)
    seen = [obs] + [env.step(np.full(t.action_dim, 0.5))[0] for _ in range(4)]
    # Assert: obs = speeds (pi0, pi1, pi2), then log10(bandwidth) - 7 (pi1, pi2)
    assert [round(float(o[1]), 3) for o in seen] == [2.0, 2.0, 0.5, 0.5, 0.5]
    assert [round(float(o[4]), 3) for o in seen] == [0.602, 0.602, 0.602, -0.301, -0.301]


def test_share_grid_and_the_segments_add_up():
    # The exhaustive optimum searches each segment alone: exact because latencies add up.
    grid = baselines.share_grid(3, 0.05)
    assert grid.shape == (231, 3) and np.allclose(grid.sum(axis=1), 1)
    t = task()
    state = State(0.0, {"pi0": 1.0, "pi1": 1.5, "pi2": 0.7}, {"pi1": 50e6, "pi2": 20e6})
    a = np.tile([0.6, 0.3, 0.1], t.segments).reshape(t.segments, 3)
    b = np.tile([0.2, 0.5, 0.3], t.segments).reshape(t.segments, 3)
    mixed = a.copy()
    mixed[0] = b[0]
    other = b.copy()
    other[0] = a[0]
    latency = [t.latency_of(x.ravel(), state) for x in (a, b, mixed, other)]
    assert latency[0] + latency[1] == pytest.approx(latency[2] + latency[3], rel=1e-9)
