"""Evolutionary reinforcement learning of a split policy (after Khadka and Tumer, ERL, 2018).

One generation:

1. every actor of the population plays one episode of the environment (`sim.env`) without
   noise; all of them see the same states (one episode seed per generation), so their fitness,
   the mean reward, compares like with like. Their transitions go into the one replay buffer;
2. the gradient learner (`learning.td3`, TD3 or DDPG) plays one episode with exploration noise into
   the same buffer, then takes `learning.learner_steps` gradient steps on batches from it;
3. the genetic algorithm (`learning.ga`) makes the next population: elites kept, children of
   tournament winners crossed over and mutated;
4. every `learning.sync_every` generations the learner's actor joins the population, in the
   place of a child;
5. the generation's champion (its fittest actor, or the learner if it does better) is scored on
   fixed held-out states; the best scored so far is the policy that training returns.

`mode="learner"` runs the gradient learner alone (population + 1 noisy episodes a generation,
the same simulator budget) and `mode="ga"` the genetic algorithm alone: the two ablations.

Episodes run in `learning.jobs` worker processes, or on a Ray cluster when `learning.ray` gives
its address (`auto`: the running one; `local`: a new one for the run; `pip install ray`). Every
random draw comes from the scenario's seed, and results come back in submission order, so a
seed gives the same policy with any number of jobs, in processes or on Ray.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from halp.dynamics import Dynamics, State, random_state
from halp.errors import HalpError
from halp.methods.erl import Actor, PolicyFile, observation
from halp.scenario import Scenario
from learning import ga
from learning.td3 import Learner, ReplayBuffer, seeded_actor
from sim.env import RANDOM, SplitEnv, Task, states_of

MODES = ("erl", "learner", "ga")
EXPLORATION = 0.1  # standard deviation of the learner's action noise (actions are in [0, 1])
LEARNER_EPISODES = 1  # noisy episodes the learner plays a generation in ERL
HELD_OUT_STATES = 20
RAY_HINT = "pip install ray"


@dataclass
class Episode:
    """One episode's transitions, in order."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    latencies: np.ndarray

    @property
    def fitness(self) -> float:
        return float(self.rewards.mean())

    @property
    def latency_s(self) -> float:
        return float(self.latencies.mean())


def play(env: SplitEnv, actor: Actor, seed: int, noise: float = 0.0) -> Episode:
    """One episode of `actor` from `env.reset(seed=seed)`; Gaussian action noise if `noise`."""
    rng = np.random.default_rng(seed + 1)
    obs, _ = env.reset(seed=seed)
    rows: list[tuple] = []
    done = False
    while not done:
        with torch.no_grad():
            action = actor(torch.from_numpy(obs)).numpy()
        if noise:
            action = np.clip(action + noise * rng.standard_normal(action.shape), 0.0, 1.0)
        next_obs, reward, terminated, truncated, info = env.step(action)
        rows.append((obs, action.astype(np.float32), reward, next_obs, info["latency_s"]))
        obs, done = next_obs, terminated or truncated
    columns = list(zip(*rows, strict=True))
    return Episode(*(np.asarray(c, dtype=np.float32 if i != 4 else np.float64)
                     for i, c in enumerate(columns)))


# ---- where episodes run: in process, in worker processes, on Ray ----------------------------
Job = tuple[np.ndarray, int, float]  # actor weights (flat), episode seed, noise


class _Player:
    """An environment and an actor to load weights into: what every worker holds."""

    def __init__(self, task: Task, states: str, episode_steps: int, hidden: int,
                 threads: int | None = None):
        if threads is not None:  # a worker of its own: one core each
            torch.set_num_threads(threads)
        self.env = SplitEnv(task, states, episode_steps)
        self.actor = Actor(task.obs_dim, task.action_dim, hidden)

    def play(self, job: Job) -> Episode:
        weights, seed, noise = job
        return play(self.env, ga.load_flat(self.actor, weights), seed, noise)


_worker: _Player | None = None


def _start_worker(task: Task, states: str, episode_steps: int, hidden: int) -> None:
    global _worker
    _worker = _Player(task, states, episode_steps, hidden, threads=1)


def _play_in_worker(job: Job) -> Episode:
    assert _worker is not None
    return _worker.play(job)


class Evaluator:
    """Plays jobs and returns their episodes in job order."""

    def __init__(self, task: Task, states: str, episode_steps: int, hidden: int, jobs: int = 1,
                 ray_address: str | None = None):
        self.pool: ProcessPoolExecutor | None = None
        self.ray_workers: list = []
        args = (_lean(task), states, episode_steps, hidden)
        if ray_address:
            self.ray_workers = _ray_workers(ray_address, max(1, jobs), args)
        elif jobs > 1:
            self.pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_start_worker, initargs=args)
        else:
            self.local = _Player(*args)

    def __call__(self, batch: list[Job]) -> list[Episode]:
        if self.ray_workers:
            import ray

            n = len(self.ray_workers)
            return ray.get([self.ray_workers[i % n].play.remote(job) for i, job in enumerate(batch)])
        if self.pool is not None:
            return list(self.pool.map(_play_in_worker, batch))
        return [self.local.play(job) for job in batch]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None
        if self.ray_workers:
            import ray

            for worker in self.ray_workers:
                ray.kill(worker)
            self.ray_workers = []
            ray.shutdown()


def _lean(task: Task) -> Task:
    """The task without its latency memo (smaller to ship to workers)."""
    return Task(task.scenario, task.graph, task.cluster, type(task.latency)(task.cluster), task.cuts)


def require_ray() -> None:
    """Fail early, in one line, when `learning.ray` is set and Ray is not installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise HalpError(f"learning.ray is set but Ray is not installed: {RAY_HINT}") from None


def _ray_workers(address: str, n: int, args: tuple) -> list:
    """`n` players as Ray actors on the cluster at `address` (`auto`: the running one; `local`:
    a new instance for this run). The cluster's Python must have this package installed."""
    require_ray()
    import ray

    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        lines = str(exc).strip().splitlines()
        raise HalpError(f"learning.ray {address}: {lines[0] if lines else type(exc).__name__} "
                        "(give HOST:PORT of a running cluster, auto or local)") from None
    remote = ray.remote(num_cpus=1)(_Player)
    return [remote.remote(*args, threads=1) for _ in range(n)]


# ---- training ---------------------------------------------------------------------------------
@dataclass
class Point:
    """The learning curve after one generation."""

    generation: int
    simulations: int  # simulator runs of training episodes so far
    seconds: float
    fitness_latency_s: float  # the champion's mean latency in this generation's episode
    champion_latency_s: float  # the champion's mean latency on the held-out states
    best_latency_s: float  # the best policy so far on the held-out states

    @staticmethod
    def columns() -> list[str]:
        return [f.name for f in fields(Point)]


@dataclass
class Result:
    policy: PolicyFile
    curve: list[Point]
    mode: str


def held_out(task: Task, n: int = HELD_OUT_STATES) -> list[State]:
    """Fixed states to score champions on (never trained on: a seed of their own)."""
    seed = task.scenario.seed * 100_003 + 7
    if states_of(task.scenario) == RANDOM:
        rng = np.random.default_rng(seed)
        return [random_state(task.cluster, rng) for _ in range(n)]
    dynamics = Dynamics(task.scenario.dynamics, task.cluster, seed)
    return [dynamics.state()] + [dynamics.advance() for _ in range(n - 1)]


def score(task: Task, actor: Actor, states: list[State]) -> float:
    """Mean simulated latency of `actor`'s splits over `states`."""
    total = 0.0
    for state in states:
        with torch.no_grad():
            action = actor(torch.from_numpy(observation(task.at(state)))).numpy()
        total += task.latency_of(action, state)
    return total / len(states)


class Trainer:
    """The state of one training run; `generation()` runs one generation (module docstring).
    A context manager: leaving it stops the worker processes."""

    def __init__(self, scenario: Scenario, mode: str = "erl", task: Task | None = None):
        if mode not in MODES:
            raise HalpError(f"training mode must be one of {', '.join(MODES)}, not {mode!r}")
        cfg = self.cfg = scenario.learning
        if cfg.ray:
            require_ray()
        self.mode = mode
        self.task = task = task or Task.from_scenario(scenario)
        self.rng = np.random.default_rng(scenario.seed)
        seed = scenario.seed * 100_003
        dims = (task.obs_dim, task.action_dim, cfg.hidden)
        self.population = ([] if mode == "learner" else
                           [seeded_actor(*dims, seed + i) for i in range(cfg.population)])
        self.learner = (None if mode == "ga" else
                        Learner(*dims, cfg.learner, seed + cfg.population + 1, devices=task.devices))
        self.buffer = ReplayBuffer(task.obs_dim, task.action_dim)
        self.checks = held_out(task)
        self.evaluate = Evaluator(task, states_of(scenario), cfg.episode_steps, cfg.hidden,
                                  cfg.jobs, cfg.ray)
        self.best: tuple[float, Actor] | None = None
        self.curve: list[Point] = []
        self.simulations = 0
        self._t0 = time.perf_counter()
        # The networks are tiny: more threads only add synchronisation (ten times slower on
        # busy cores). One thread while training; `close` gives the caller's setting back.
        self._threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.evaluate.close()
        torch.set_num_threads(self._threads)

    def generation(self) -> Point:
        cfg, rng, population, learner = self.cfg, self.rng, self.population, self.learner
        g = len(self.curve) + 1
        episode_seed = int(rng.integers(2**31))  # the same states for every member
        batch: list[Job] = [(ga.flat(a), episode_seed, 0.0) for a in population]
        if learner is not None:
            noisy = cfg.population + 1 if self.mode == "learner" else LEARNER_EPISODES
            weights = ga.flat(learner.actor)
            batch += [(weights, int(rng.integers(2**31)), EXPLORATION) for _ in range(noisy)]
        episodes = self.evaluate(batch)
        for ep in episodes:  # one buffer for everyone, filled in job order
            self.simulations += len(ep.rewards)
            for row in zip(ep.obs, ep.actions, ep.rewards, ep.next_obs, strict=True):
                self.buffer.add(*row)
        fitness = [ep.fitness for ep in episodes[: len(population)]]
        candidates: list[tuple[Actor, float]] = []
        if population:
            i = int(np.argmax(fitness))
            candidates.append((population[i], episodes[i].latency_s))
        if learner is not None:
            if len(self.buffer) >= cfg.batch:
                learner.train(self.buffer, cfg.learner_steps, cfg.batch, rng)
            own = [ep.latency_s for ep in episodes[len(population):]]
            candidates.append((learner.actor, float(np.mean(own))))
        scored = [(score(self.task, actor, self.checks), actor, fit) for actor, fit in candidates]
        champion_s, champion, fit_s = min(scored, key=lambda s: s[0])
        if self.best is None or champion_s < self.best[0]:
            self.best = (champion_s, copy.deepcopy(champion))
        if population:
            self.population = ga.next_generation(population, fitness, elites=cfg.elites,
                                                 tournament_size=cfg.tournament,
                                                 sigma=cfg.mutation_sigma, rng=rng)
            if learner is not None and g % cfg.sync_every == 0:
                self.population[-1] = copy.deepcopy(learner.actor)
        point = Point(g, self.simulations, time.perf_counter() - self._t0, fit_s, champion_s,
                      self.best[0])
        self.curve.append(point)
        return point

    def policy(self) -> PolicyFile:
        """The best actor scored so far, as a policy file."""
        assert self.best is not None, "no generation has run"
        actor = copy.deepcopy(self.best[1]).eval()
        return PolicyFile(actor, self.task.cluster.names, self.task.cuts, self.task.model,
                          self.cfg.hidden)


def train(scenario: Scenario, *, mode: str = "erl", generations: int | None = None,
          task: Task | None = None, progress: Callable[[Point, int], None] | None = None) -> Result:
    """Train a split policy on `scenario` (its `learning` section) and return it with its curve."""
    total = generations or scenario.learning.generations
    with Trainer(scenario, mode, task) as trainer:
        for _ in range(total):
            point = trainer.generation()
            if progress is not None:
                progress(point, total)
        return Result(trainer.policy(), trainer.curve, mode)


def write_curve(curve: list[Point], path: Path) -> Path:
    """The learning curve as CSV, one row per generation."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(Point.columns())
        for p in curve:
            writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in astuple(p)])
    return path


def curve_png(curve: list[Point], path: Path, title: str) -> Path:
    """The learning curve as a picture: each generation's champion and the best so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    sims = [p.simulations for p in curve]
    ax.plot(sims, [p.champion_latency_s * 1e3 for p in curve], color="#9467bd", linewidth=1,
            label="champion of the generation")
    ax.plot(sims, [p.best_latency_s * 1e3 for p in curve], color="#d62728", linewidth=2,
            label="best so far (the policy)")
    ax.set_xlabel("simulator runs")
    ax.set_ylabel("mean latency on held-out states (ms)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def read_curve(path: Path) -> list[Point]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [Point(int(r["generation"]), int(r["simulations"]),
                  *(float(r[c]) for c in Point.columns()[2:])) for r in rows]


def fingerprint(task: Task) -> dict:
    """What a policy holds only for: the model, the cuts, each device's profile (a digest of its
    cost coefficients). `halp train` writes it beside the policy (NAME.json)."""
    profiles = {}
    for d in task.cluster.devices:
        costs = {k: v for k, v in d.profile.to_dict().items() if k != "provenance"}
        text = json.dumps(costs, sort_keys=True, default=str)
        profiles[d.name] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return {"model": task.model, "cuts": task.cuts, "profiles": profiles}


def stale(task: Task, policy_path: Path) -> str | None:
    """Why a policy no longer fits `task` (a profile changed since training), or None."""
    sidecar = policy_path.with_suffix(".json")
    if not sidecar.is_file():
        return None
    trained = json.loads(sidecar.read_text()).get("fingerprint", {})
    now = fingerprint(task)
    changed = [n for n, digest in trained.get("profiles", {}).items()
               if now["profiles"].get(n) != digest]
    if changed:
        return (f"{policy_path.name} was trained with other profiles for {', '.join(changed)}; "
                f"retrain it with `halp train`")
    return None
