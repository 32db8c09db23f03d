"""Speedup of one VGG-16 request against the number of devices, 1 to 8, equal and unequal.

The first n devices of scenarios/vgg16-8dev.yaml (equal) and vgg16-8dev-unequal.yaml (speeds
0.5x to 2x), 100 Mbps star, one request on an idle cluster; speedup is the stand-alone latency
on the host over the method's latency. Writes speedup_vs_devices.png and .csv.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import COLOURS, OUT, first_devices, latency_s, save

METHODS = ["halp", "equal", "deepthings", "modnn", "offload"]
CASES = [("vgg16-8dev", "equal devices"), ("vgg16-8dev-unequal", "unequal devices")]


def main(out_dir: Path = OUT) -> list[Path]:
    rows = []
    for name, label in CASES:
        for n in range(1, 9):
            s = first_devices(name, n)
            alone = latency_s(s, "standalone")
            for method in METHODS:
                rows.append((label, n, method, alone / latency_s(s, method)))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    for ax, (_, label) in zip(axes, CASES, strict=True):
        for method in METHODS:
            points = [(n, x) for c, n, m, x in rows if c == label and m == method]
            ax.plot([n for n, _ in points], [x for _, x in points], marker="o", markersize=4,
                    label=method, color=COLOURS[method],
                    linewidth=2.2 if method == "halp" else 1.2)
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xlabel("devices (host included)")
        ax.set_title(f"VGG-16, {label}, 100 Mbps star", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("speedup against stand-alone")
    axes[0].legend(fontsize=8)
    png = save(fig, out_dir, "speedup_vs_devices")
    plt.close(fig)
    table = out_dir / "speedup_vs_devices.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["devices_kind", "devices", "method", "speedup"])
        writer.writerows(rows)
    return [png, table]


if __name__ == "__main__":
    print("\n".join(str(p) for p in main()))
