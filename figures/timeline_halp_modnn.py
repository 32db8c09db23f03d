"""The timeline of one HALP request beside one MoDNN request (VGG-16, three devices, 100 Mbps).

One row per device and per link, the same time axis for both, segments marked. Writes
timeline_halp_modnn.png.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from halp.report import draw_timeline

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import OUT, save, scenario, trace


def main(out_dir: Path = OUT) -> list[Path]:
    s = scenario("default")
    runs = [trace(s, method) for method in ("halp", "modnn")]
    fig, axes = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for ax, (t, plan) in zip(axes, runs, strict=True):
        latency = t.requests[0].latency
        draw_timeline(ax, t, plan, title=f"{plan.method}: {latency * 1e3:.0f} ms")
    fig.suptitle(f"One VGG-16 request on three devices, {s.network.bandwidth / 1e6:g} Mbps star "
                 "(simulated)", fontsize=11)
    path = save(fig, out_dir, "timeline_halp_modnn")
    plt.close(fig)
    return [path]


if __name__ == "__main__":
    print("\n".join(str(p) for p in main()))
