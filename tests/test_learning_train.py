"""ERL training: one shared replay buffer, seeded determinism, and it learns on a fixed state."""

from __future__ import annotations

import shutil
import sys
import tempfile

import numpy as np
import pytest
import torch
from test_sim_env import task

from halp.errors import HalpError
from halp.methods.erl import observation
from learning import ga
from learning.td3 import Learner, ReplayBuffer
from learning.train import Trainer, train

TINY = {"learning.population": 4, "learning.elites": 1, "learning.episode_steps": 3,
        "learning.batch": 8, "learning.learner_steps": 10, "learning.sync_every": 2,
        "learning.hidden": 16}
# A fixed state: dynamics with nothing changing keep the nominal speeds and bandwidths.
FIXED = {**TINY, "dynamics": {"interval": "1s"}}


def test_population_and_learner_fill_one_buffer():
    t = task(**TINY)
    with Trainer(t.scenario, task=t) as trainer:
        trainer.generation()
        buffer = trainer.buffer
        # 4 members and 1 learner episode of 3 steps, all in the one buffer
        assert len(buffer) == (4 + 1) * 3
        member = trainer.population[0]  # an elite: the fittest of generation one, unchanged
        assert trainer.learner is not None
        with torch.no_grad():
            first = member(torch.from_numpy(buffer.obs[:3])).numpy()
        stored = buffer.action[: 4 * 3]
        assert any(np.allclose(first, stored[i * 3:(i + 1) * 3], atol=1e-6) for i in range(4))
        assert not np.allclose(buffer.action[12:15], 0)  # the learner's noisy episode
        trainer.generation()
        assert len(buffer) == 2 * (4 + 1) * 3


def test_learner_mode_has_no_population_and_ga_mode_no_learner():
    t = task(**TINY)
    with Trainer(t.scenario, mode="learner", task=t) as learner:
        learner.generation()
        assert learner.population == [] and len(learner.buffer) == (4 + 1) * 3
    with Trainer(t.scenario, mode="ga", task=t) as genetic:
        genetic.generation()
        assert genetic.learner is None and len(genetic.population) == 4


def test_same_seed_same_policy_other_seed_other_policy():
    t = task(**TINY)
    first = train(t.scenario, generations=2, task=t).policy
    again = train(t.scenario, generations=2, task=t).policy
    assert np.array_equal(ga.flat(first.actor), ga.flat(again.actor))
    other = task(**TINY, seed=6)
    assert not np.array_equal(ga.flat(train(other.scenario, generations=2, task=other).policy.actor),
                              ga.flat(first.actor))


@pytest.mark.slow
def test_worker_processes_give_the_same_policy():
    t = task(**TINY)
    alone = train(t.scenario, generations=1, task=t).policy
    parallel = task(**TINY, **{"learning.jobs": 2})
    pooled = train(parallel.scenario, generations=1, task=parallel).policy
    assert np.array_equal(ga.flat(alone.actor), ga.flat(pooled.actor))


def test_ray_without_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    t = task(**TINY, **{"learning.ray": "auto"})
    with pytest.raises(HalpError, match="pip install ray"):
        Trainer(t.scenario, task=t)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_required")
def test_a_local_ray_instance_gives_the_same_policy(monkeypatch):
    temp = tempfile.mkdtemp(prefix="halp-ray-", dir="/tmp")  # short: Ray's socket paths
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_TMPDIR", temp)
    t = task(**TINY)
    alone = train(t.scenario, generations=1, task=t).policy
    on_ray = task(**TINY, **{"learning.ray": "local", "learning.jobs": 2})
    try:
        remote = train(on_ray.scenario, generations=1, task=on_ray).policy
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert np.array_equal(ga.flat(alone.actor), ga.flat(remote.actor))
    import ray

    assert not ray.is_initialized()  # shut down after training


def test_a_short_run_beats_a_random_policy_on_a_fixed_state():
    # Prepare
    t = task(**FIXED, **{"learning.generations": 8})
    state = t.nominal()
    # Execute
    result = train(t.scenario, task=t)
    # Assert: better than the untrained actors (random weights) it started from
    obs = torch.from_numpy(observation(t.at(state)))
    with torch.no_grad():
        trained = t.latency_of(result.policy.actor(obs).numpy(), state)
        random = [t.latency_of(Trainer(t.scenario, task=t).population[i](obs).numpy(), state)
                  for i in range(2)]
    assert trained < min(random)
    assert [p.generation for p in result.curve] == list(range(1, 9))
    assert all(b >= a for a, b in zip(result.curve[1:], result.curve, strict=False)
               for a, b in [(a.best_latency_s, b.best_latency_s)])


@pytest.mark.parametrize("kind", ["td3", "ddpg"])
def test_the_learner_finds_the_best_action_of_a_known_bandit(kind):
    # Prepare: reward -|a - 0.3| summed over the action, from random actions
    rng = np.random.default_rng(0)
    learner = Learner(2, 3, 32, kind, seed=0)
    learner.log_cost = False
    buffer = ReplayBuffer(2, 3)
    for _ in range(600):
        obs = rng.random(2).astype(np.float32)
        action = rng.random(3).astype(np.float32)
        buffer.add(obs, action, -float(np.abs(action - 0.3).sum()), obs)
    # Execute
    learner.train(buffer, 1000, 64, rng)
    # Assert
    assert np.allclose(learner.act(np.array([0.5, 0.5], dtype=np.float32)), 0.3, atol=0.1)
