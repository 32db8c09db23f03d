"""Latency against the number of heterogeneous devices, every split method, ERL's claim beside.

For n = 2, 3, 4, 5 devices (scenarios/erl-vgg16-<n>dev.yaml: VGG-16 on Raspberry Pi 4 profiles,
speeds 1x, 2x, 0.5x, 1.5x, 0.75x, links 100, 40, 60, 80 Mbps), the mean simulated latency over
the same 30 random states (speeds 0.25x to 2x, bandwidth 5 to 200 Mbps) of: equal split (EE),
shares proportional to speed, HALP's optimiser, the shipped ERL policy, and for n <= 3 the
exhaustive optimum over a 0.05 share grid. The published claim is ERL 1.81x, 1.98x and 5.28x
faster than EE at 2, 3 and 4 devices; what we measure is printed beside it and drawn on the
figure. A device count without a trained policy (policies/erl-vgg16-<n>dev.pt) is skipped for ERL.
Writes erl_devices.png and .csv.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import COLOURS, OUT, REPO, SCENARIOS, save, write_table

from halp.dynamics import random_state
from halp.methods.erl import PolicyFile
from halp.scenario import load_scenario
from learning import baselines
from learning.train import stale
from sim.env import Task

DEVICES = [2, 3, 4, 5]
STATES, SEED, GRID_STEP, GRID_UP_TO = 30, 2025, 0.05, 3
CLAIM = {2: 1.81, 3: 1.98, 4: 5.28}  # ERL against EE, as published
STYLE = {"equal (EE)": COLOURS["equal"], "speed": "#8c564b", "HALP": COLOURS["halp"],
         "ERL": "#ff7f0e", "optimum": "#000000"}


def main(out_dir: Path = OUT) -> list[Path]:
    rows = []
    lines = []
    for n in DEVICES:
        path = REPO / "policies" / f"erl-vgg16-{n}dev.pt"
        policy = PolicyFile.load(path) if path.is_file() else None
        task = Task.from_scenario(load_scenario(SCENARIOS / f"erl-vgg16-{n}dev.yaml"),
                                  cuts=policy.cuts if policy else None)
        rng = np.random.default_rng(SEED)
        states = [random_state(task.cluster, rng) for _ in range(STATES)]
        methods = {"equal (EE)": baselines.equal(task), "speed": baselines.speed(task),
                   "HALP": baselines.halp(task)}
        if policy is not None:
            methods["ERL"] = baselines.policy(task, policy)
            if why := stale(task, path):
                print(f"warning: {why}")
        mean = {name: float(np.mean(baselines.latencies(task, m, states)))
                for name, m in methods.items()}
        if n <= GRID_UP_TO:
            mean["optimum"] = float(np.mean([baselines.optimum(task, s, GRID_STEP)[0] for s in states]))
        rows += [(n, name, value) for name, value in mean.items()]
        if "ERL" in mean:
            measured = mean["equal (EE)"] / mean["ERL"]
            claim = f"published {CLAIM[n]:.2f}x" if n in CLAIM else "no published figure"
            lines.append(f"{n} devices: ERL {measured:.2f}x faster than EE ({claim})")
    for line in lines:
        print(line)
    fig, ax = plt.subplots(figsize=(7, 4.4))
    for name, colour in STYLE.items():
        points = [(n, v) for n, m, v in rows if m == name]
        if points:
            ax.plot([n for n, _ in points], [v * 1e3 for _, v in points], marker="o",
                    markersize=4, label=name, color=colour,
                    linewidth=2.2 if name == "ERL" else 1.2,
                    linestyle=":" if name == "optimum" else "-")
    ax.text(0.02, 0.02, "\n".join(lines), transform=ax.transAxes, fontsize=7, va="bottom")
    ax.set_xticks(DEVICES)
    ax.set_xlabel("devices (host included)")
    ax.set_ylabel(f"mean latency over {STATES} random states (ms)")
    ax.set_title("VGG-16 on heterogeneous Raspberry Pi 4s: split methods", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    png = save(fig, out_dir, "erl_devices")
    plt.close(fig)
    claims = [(n, "published ERL/EE speedup", claim) for n, claim in CLAIM.items()]
    table = write_table(out_dir / "erl_devices.csv", ["devices", "method", "mean_latency_s"],
                        [*rows, *claims])
    return [png, table]


if __name__ == "__main__":
    print("\n".join(str(p) for p in main()))
