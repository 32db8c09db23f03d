"""Latency of one VGG-16 request against link bandwidth, 1 Mbps to 1 Gbps, every method.

Three equal devices on a star (scenarios/default.yaml), one request on an idle cluster,
simulated. Writes latency_vs_bandwidth.png and .csv.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import COLOURS, METHODS, OUT, latency_s, save, scenario, write_table

BANDWIDTHS_MBPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]


def main(out_dir: Path = OUT) -> list[Path]:
    rows = []
    for mbps in BANDWIDTHS_MBPS:
        s = scenario("default", **{"network.bandwidth": f"{mbps}Mbps"})
        for method in METHODS:
            rows.append((mbps, method, latency_s(s, method)))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in METHODS:
        points = [(b, t) for b, m, t in rows if m == method]
        ax.plot([b for b, _ in points], [t * 1e3 for _, t in points], marker="o", markersize=4,
                label=method, color=COLOURS[method], linewidth=2.2 if method == "halp" else 1.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("link bandwidth (Mbit/s)")
    ax.set_ylabel("latency of one request (ms)")
    ax.set_title("VGG-16 on three devices (star), simulated", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    png = save(fig, out_dir, "latency_vs_bandwidth")
    plt.close(fig)
    table = write_table(out_dir / "latency_vs_bandwidth.csv",
                        ["bandwidth_mbps", "method", "latency_s"], rows)
    return [png, table]


if __name__ == "__main__":
    print("\n".join(str(p) for p in main()))
