"""How close each split method comes to the best split: its gap to the exhaustive optimum.

Three heterogeneous devices (scenarios/erl-vgg16-3dev.yaml: VGG-16 on Raspberry Pi 4 profiles,
the segment cuts the ERL policy was trained for: HALP's at the nominal state), 100 random states
(speeds 0.25x to 2x, bandwidth 5 to 200 Mbps log-uniform) from a seed that training never uses.
At each state every method's plan is simulated; the optimum searches a grid of shares 0.05 apart
for each segment (231 points a segment, 231 simulator runs per segment and state; exact per
segment, see learning/baselines.py).
The gap of a method is the mean over states of its latency over the optimum's, minus one.

Methods: equal split (EE), shares proportional to speed, HALP's model-based optimiser (send
orders and single rows, so it can beat the grid), and the shipped policies: ERL
(policies/erl-vgg16-3dev.pt), the learner alone (-learner.pt), the GA alone (-ga.pt); train a
missing one with `halp train scenarios/erl-vgg16-3dev.yaml [--mode learner|ga] --out ...`.
The target is ERL within 5%; the last line printed is the ERL gap.

    .venv/bin/python bench/erl_vs_optimum.py [--states 100] [--step 0.05] [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from halp.dynamics import State, random_state
from halp.methods.erl import PolicyFile
from halp.scenario import load_scenario
from learning import baselines
from learning.train import stale
from sim.env import Task

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "scenarios" / "erl-vgg16-3dev.yaml"
POLICIES = {"learner alone": "erl-vgg16-3dev-learner.pt", "GA alone": "erl-vgg16-3dev-ga.pt",
            "ERL": "erl-vgg16-3dev.pt"}
STATES_SEED = 2024

_task: Task | None = None


def _start(task: Task) -> None:
    global _task
    _task = task


def _optimum(job: tuple[State, float]) -> float:
    assert _task is not None
    return baselines.optimum(_task, job[0], job[1])[0]


def optimum_latencies(task: Task, states: list[State], step: float, jobs: int) -> list[float]:
    if jobs <= 1:
        return [baselines.optimum(task, s, step)[0] for s in states]
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_start,
                             initargs=(task,)) as pool:
        return list(pool.map(_optimum, [(s, step) for s in states], chunksize=4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=100)
    parser.add_argument("--step", type=float, default=0.05, help="share grid step of the optimum")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    scenario = load_scenario(SCENARIO)
    policies = {name: PolicyFile.load(REPO / "policies" / file) for name, file in POLICIES.items()
                if (REPO / "policies" / file).is_file()}
    for name in POLICIES.keys() - policies.keys():
        print(f"{name}: no policy at policies/{POLICIES[name]}; skipped")
    # The policies' own cuts (they were chosen at training time), else HALP's now.
    cuts = policies["ERL"].cuts if "ERL" in policies else None
    task = Task.from_scenario(scenario, cuts=cuts)
    for name, policy in list(policies.items()):
        if why := stale(task, REPO / "policies" / POLICIES[name]):
            print(f"warning: {why}")
        if policy.cuts != task.cuts:
            print(f"{name}: trained for cuts {policy.cuts}, not ERL's {task.cuts}; skipped "
                  "(retrain it on the same scenario)")
            del policies[name]
    rng = np.random.default_rng(STATES_SEED)
    states = [random_state(task.cluster, rng) for _ in range(args.states)]
    grid = len(baselines.share_grid(task.devices, args.step))
    print(f"{task.model} on {task.devices} devices, cuts {task.cuts}; {args.states} random states; "
          f"optimum: share grid step {args.step} ({grid} points x {task.segments} segments)")
    t0 = time.perf_counter()
    best = np.array(optimum_latencies(task, states, args.step, args.jobs))
    print(f"optimum searched in {time.perf_counter() - t0:.0f} s "
          f"({grid * task.segments * args.states} simulator runs)")
    methods = {"equal split (EE)": baselines.equal(task), "proportional to speed": baselines.speed(task),
               "HALP optimiser": baselines.halp(task)}
    for name, policy in policies.items():
        methods[name] = baselines.policy(task, policy)
    print(f"{'method':<24} {'mean ms':>9} {'gap':>8} {'worst':>8} {'within 5%':>10}")
    print(f"{'optimum (grid)':<24} {best.mean() * 1e3:>9.1f}")
    gaps = {}
    for name, method in methods.items():
        latency = np.array(baselines.latencies(task, method, states))
        ratio = latency / best - 1
        gaps[name] = ratio.mean()
        print(f"{name:<24} {latency.mean() * 1e3:>9.1f} {ratio.mean() * 100:>7.2f}% "
              f"{ratio.max() * 100:>7.2f}% {np.mean(ratio <= 0.05) * 100:>9.0f}%")
    if "ERL" in gaps:
        print(f"ERL gap to the optimum: {gaps['ERL'] * 100:.2f}% (target: within 5%)")


if __name__ == "__main__":
    main()
