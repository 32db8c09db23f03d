"""Learning curves of ERL, the gradient learner alone and the GA alone: latency against runs.

Three heterogeneous devices (scenarios/erl-vgg16-3dev.yaml, VGG-16 on Raspberry Pi 4 profiles):
mean simulated latency of the best policy so far on 20 held-out random states, against the
simulator runs spent in training. The curves are the CSVs written by `halp train` next to the
shipped policies (policies/erl-vgg16-3dev{,-learner,-ga}.csv); a missing one is trained here
first (a few minutes). Equal split and HALP's model-based optimiser on the same held-out states
are the reference lines. Writes erl_learning.png and .csv.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import OUT, REPO, SCENARIOS, save, write_table

from halp.methods.erl import PolicyFile
from halp.scenario import load_scenario
from learning import baselines
from learning.train import held_out, read_curve, train, write_curve
from sim.env import Task

SCENARIO = "erl-vgg16-3dev"
RUNS = [("erl", "", "ERL", "#d62728"), ("learner", "-learner", "learner alone (TD3)", "#1f77b4"),
        ("ga", "-ga", "GA alone", "#2ca02c")]


def curve(task: Task, mode: str, suffix: str):
    path = REPO / "policies" / f"{SCENARIO}{suffix}.csv"
    if not path.is_file():
        write_curve(train(task.scenario, mode=mode, task=task).curve, path)
    return read_curve(path)


def main(out_dir: Path = OUT) -> list[Path]:
    scenario = load_scenario(SCENARIOS / f"{SCENARIO}.yaml")
    policy = REPO / "policies" / f"{SCENARIO}.pt"
    task = Task.from_scenario(scenario, cuts=PolicyFile.load(policy).cuts if policy.is_file() else None)
    checks = held_out(task)
    references = {name: sum(baselines.latencies(task, method, checks)) / len(checks)
                  for name, method in [("equal split", baselines.equal(task)),
                                       ("HALP optimiser", baselines.halp(task))]}
    fig, ax = plt.subplots(figsize=(7, 4.2))
    rows = []
    for mode, suffix, label, colour in RUNS:
        points = curve(task, mode, suffix)
        ax.plot([p.simulations for p in points], [p.best_latency_s * 1e3 for p in points],
                label=label, color=colour, linewidth=2.2 if mode == "erl" else 1.4)
        rows += [(mode, p.generation, p.simulations, p.best_latency_s, p.champion_latency_s)
                 for p in points]
    for (name, value), style in zip(references.items(), ["--", ":"], strict=True):
        ax.axhline(value * 1e3, color="grey", linestyle=style, linewidth=1, label=name)
        rows.append((name, 0, 0, value, value))
    ax.set_xlabel("simulator runs in training")
    ax.set_ylabel("mean latency, 20 held-out states (ms)")
    ax.set_title(f"VGG-16, 3 heterogeneous devices, cuts {task.cuts}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    png = save(fig, out_dir, "erl_learning")
    plt.close(fig)
    table = write_table(out_dir / "erl_learning.csv", ["method", "generation", "simulations",
                                                       "best_latency_s", "champion_latency_s"], rows)
    return [png, table]


if __name__ == "__main__":
    print("\n".join(str(p) for p in main()))
