"""Adaptation: latency over time when a device's load jumps and a link's bandwidth drops.

scenarios/erl-vgg16-3dev-adapt.yaml: three heterogeneous devices, a decision every second for
40 s; pi1 (the fastest) loses 75% of its CPU to a background load from 10 s to 30 s, pi2's link
drops from 40 to 5 Mbps at 20 s (`halp.dynamics`). At each second one request is simulated alone
on the cluster as it is then, with: the ERL policy re-deciding from what the host measures
(policies/erl-vgg16-3dev.pt), HALP's split made once at time zero and kept (static), HALP
re-planned every second with the true state (the model-based reference), and the equal split.
Writes erl_adaptation.png and .csv.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import COLOURS, OUT, REPO, SCENARIOS, save, write_table

from halp.dynamics import Dynamics
from halp.methods.erl import PolicyFile
from halp.scenario import load_scenario
from learning import baselines
from learning.train import stale
from sim.env import Task

SCENARIO, POLICY, SECONDS = "erl-vgg16-3dev-adapt", "erl-vgg16-3dev.pt", 40
STYLE = {"ERL (re-decides)": ("#ff7f0e", "-", 2.2), "HALP static (t = 0)": (COLOURS["halp"], "--", 1.4),
         "HALP re-planned": (COLOURS["halp"], ":", 1.2), "equal (EE)": (COLOURS["equal"], "-", 1.0)}


def main(out_dir: Path = OUT) -> list[Path]:
    scenario = load_scenario(SCENARIOS / f"{SCENARIO}.yaml")
    policy = PolicyFile.load(REPO / "policies" / POLICY)
    task = Task.from_scenario(scenario, cuts=policy.cuts)  # the cuts it was trained for
    if why := stale(task, REPO / "policies" / POLICY):
        print(f"warning: {why}")
    dynamics = Dynamics(scenario.dynamics, task.cluster, scenario.seed)
    states = [dynamics.state()] + [dynamics.advance() for _ in range(SECONDS - 1)]
    first = task.at(states[0])
    static = baselines.halp(task)(first)
    methods = {"ERL (re-decides)": baselines.policy(task, policy),
               "HALP static (t = 0)": lambda cluster: static,
               "HALP re-planned": baselines.halp(task), "equal (EE)": baselines.equal(task)}
    series = {name: baselines.latencies(task, method, states) for name, method in methods.items()}
    fig, ax = plt.subplots(figsize=(8, 4.2))
    times = [s.time_s for s in states]
    for name, values in series.items():
        colour, style, width = STYLE[name]
        ax.step(times, [v * 1e3 for v in values], where="post", label=name, color=colour,
                linestyle=style, linewidth=width)
    for at, what in [(10, "pi1 loaded 75%"), (20, "pi2 link 40 -> 5 Mbps"), (30, "pi1 load ends")]:
        ax.axvline(at, color="grey", linewidth=0.8)
        ax.text(at + 0.3, ax.get_ylim()[1] * 0.97, what, fontsize=7, va="top")
    ax.set_xlabel("time (s), one decision a second")
    ax.set_ylabel("latency of one request (ms)")
    ax.set_title("VGG-16 on 3 heterogeneous devices: adapting to load and bandwidth", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    png = save(fig, out_dir, "erl_adaptation")
    plt.close(fig)
    table = write_table(out_dir / "erl_adaptation.csv", ["time_s", *series],
                        ([t, *(f"{series[name][i]:.6g}" for name in series)]
                         for i, t in enumerate(times)))
    return [png, table]


if __name__ == "__main__":
    print("\n".join(str(p) for p in main()))
