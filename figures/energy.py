"""Latency against energy per request, every method, VGG-16, ResNet-50 and MobileNet-V2.

Three Raspberry Pi 4s (the rpi4 profile and its power model, scenarios/default.yaml) on a star
of 10 Mbps to 1 Gbps links, one request on an idle cluster, simulated; energy by
`halp.energy` (the devices taking part, idle power over the request's span included). Writes
energy.png and energy.csv (with the largest memory a device needs, `halp.memory`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter, ScalarFormatter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import COLOURS, METHODS, OUT, prepared, save, scenario, trace, write_table

from halp.energy import energy_report, powers_of
from halp.memory import plan_memory

MODELS = {"vgg16": "VGG-16", "resnet50": "ResNet-50", "mobilenet_v2": "MobileNet-V2"}
BANDWIDTHS_MBPS = [10, 25, 50, 100, 200, 1000]


def main(out_dir: Path = OUT) -> list[Path]:
    rows = []
    for model in MODELS:
        for mbps in BANDWIDTHS_MBPS:
            s = scenario("default", **{"model": {"name": model},
                                       "network.bandwidth": f"{mbps}Mbps"})
            prep = prepared(s)
            powers = powers_of(prep.cluster)
            for method in METHODS:
                run, plan = trace(s, method)
                joules = energy_report(run, powers, measured=False)["mean_j"]
                need = max(m.total_bytes for m in plan_memory(plan, prep.graph).values())
                rows.append((model, mbps, method, run.latencies()[0], joules, need))
    fig, axes = plt.subplots(1, len(MODELS), figsize=(5 * len(MODELS), 4.5))
    for ax, (model, title) in zip(axes, MODELS.items(), strict=True):
        for method in METHODS:
            points = [(mbps, t, j) for m, mbps, meth, t, j, _ in rows if m == model and meth == method]
            ax.plot([t for _, t, _ in points], [j for _, _, j in points], marker="o", markersize=4,
                    label=method, color=COLOURS[method], linewidth=2.2 if method == "halp" else 1.2)
            if method in ("halp", "modnn"):
                for mbps, t, j in (points[0], points[-1]):
                    ax.annotate(f"{mbps}", (t, j), textcoords="offset points", xytext=(4, 4),
                                fontsize=6, color=COLOURS[method])
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("latency of one request (s)")
        ax.set_ylabel("energy per request, all devices (J)")
        ax.set_title(f"{title}: three Pi 4s, 10 Mbps to 1 Gbps", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.suptitle("Latency against energy, simulated (rpi4 power model); HALP's and MoDNN's "
                 "slowest and fastest links labelled in Mbit/s", fontsize=10)
    png = save(fig, out_dir, "energy")
    plt.close(fig)
    table = write_table(out_dir / "energy.csv",
                        ["model", "bandwidth_mbps", "method", "latency_s", "energy_j",
                         "largest_memory_bytes"], rows)
    return [png, table]


if __name__ == "__main__":
    print("\n".join(str(p) for p in main()))
