"""The accuracy-latency frontier of the 16 MobileNet-V1 variants, stand-alone and with HALP.

Each variant's simulated single-request latency on scenarios/select-mobilenet.yaml at its
nominal bandwidth, against its published top-1 accuracy; the Pareto-optimal variants of each
method are joined by a line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from _shared import OUT, SCENARIOS, save, write_rows

from halp.accuracy import spec_of, top1
from halp.methods import PlannedMethod, plan_for, prepare
from halp.methods.select import MOBILENET_VARIANTS
from halp.scenario import HalpMethod, StandaloneMethod, load_scenario
from sim.engine import simulate

METHODS: list[tuple[str, PlannedMethod, str]] = [
    ("stand-alone", StandaloneMethod(name="standalone"), "#7f7f7f"),
    ("HALP", HalpMethod(name="halp"), "#d62728")]


def frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both latency (lower) and accuracy (higher)."""
    best, out = -1.0, []
    for latency, accuracy in sorted(points):
        if accuracy > best:
            out.append((latency, accuracy))
            best = accuracy
    return out


def main(out_dir: Path = OUT) -> list[Path]:
    scenario = load_scenario(SCENARIOS / "select-mobilenet.yaml")
    rows: list[dict[str, Any]] = []
    for variant in MOBILENET_VARIANTS:
        prep = prepare(scenario, spec_of(variant, scenario.seed))
        for label, method, _ in METHODS:
            plan = plan_for(method, prep.graph, prep.cluster, prep.latency, variant)
            latency = simulate(prep.cluster, prep.graph, plan, [0.0])[0]
            rows.append({"variant": variant, "method": label, "latency_s": latency, "top1": top1(variant)})
    table = write_rows(rows, out_dir / "frontier.csv")
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for label, _, colour in METHODS:
        mine = [r for r in rows if r["method"] == label]
        ax.scatter([1e3 * r["latency_s"] for r in mine], [r["top1"] for r in mine], color=colour,
                   label=label, s=18)
        line = frontier([(r["latency_s"], r["top1"]) for r in mine])
        ax.plot([1e3 * x for x, _ in line], [y for _, y in line], color=colour, alpha=0.7)
        for r in mine:
            ax.annotate(r["variant"], (1e3 * r["latency_s"], r["top1"]), fontsize=5, alpha=0.7)
    ax.set(xlabel="simulated latency (ms)", ylabel="ImageNet top-1 (%)", xscale="log",
           title="MobileNet-V1 variants: accuracy against latency")
    ax.grid(alpha=0.3)
    ax.legend()
    return [save(fig, out_dir, "frontier"), table]
