"""Speed-up against the number of devices, 1 to 8, for VGG-16, ResNet-18, ResNet-50, MobileNet-V2.

Simulated: the first n devices of scenarios/vgg16-8dev.yaml (the Raspberry Pi 4 profile `rpi4`,
fitted to published Pi 4 times, 100 Mbps star) with each model in turn, one request on an idle
cluster, every method; speed-up is the stand-alone latency on the host over the method's
latency. One panel per model. Writes speedup_models.png and speedup_models.csv (a row per model,
method and number of devices).

Emulated, when `HALP_FIGURE_EMU_REQUESTS=N` is set (root and Mininet): each model on the three
devices of scenarios/emu_vgg16_3dev.yaml (a quarter of a core each, profile emu-q measured
inside such a host; 100 Mbps star), stand-alone, HALP and MoDNN served in turn on one emulated
network and one set of workers, in two rounds of N/2 requests each, rounded up (the machine's
speed drifts over minutes, so methods alternate), requests far enough apart that none waits for
the one before. Speed-up is the median stand-alone latency over the method's median. Beside
each, the simulator's prediction for those same devices. Drawn as markers at three devices over
the simulated Pi 4 curves: speedup_models_emu.png and speedup_models_emu.csv. A quarter core
computes at another speed than the Pi 4 (the caption says how much faster or slower), so the
same 100 Mbps weighs differently there: the emulated points are to be read against their own
simulated prediction (open markers), not the Pi 4 line. Without the variable only the simulated
part is drawn.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.lines import Line2D

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import COLOURS, OUT, first_devices, latency_s, prepared, scenario, write_rows

from halp.backends import quota_runner, ready_backend
from halp.errors import HalpError
from halp.latency.probe import check_profiles
from halp.runtime import TOLERANCE
from halp.scenario import Scenario
from halp.serving import policy_for
from halp.trace import Trace

# (model config, panel title); the test passes smaller ones.
MODELS: list[tuple[dict[str, Any], str]] = [
    ({"name": "vgg16"}, "VGG-16"),
    ({"name": "resnet18"}, "ResNet-18"),
    ({"name": "resnet50"}, "ResNet-50"),
    ({"name": "mobilenet_v2"}, "MobileNet-V2"),
]
DEVICES = range(1, 9)
METHODS = ["standalone", "equal", "halp", "modnn", "deepthings", "offload"]
SIM_SCENARIO = "vgg16-8dev"  # rpi4 devices on a 100 Mbps star; the first n are taken

EMU_ENV = "HALP_FIGURE_EMU_REQUESTS"  # the variable reliability.py reads too
EMU_SCENARIO = "emu_vgg16_3dev"  # three quarter-core devices (emu-q), 100 Mbps star
EMU_METHODS = ["standalone", "halp", "modnn"]
EMU_ROUNDS = 2
EMU_MARKERS = {"emu": "*", "sim": "D"}  # emulated, and the simulator on the same devices


def emu_requests_from_env() -> int:
    """Requests per model and method on the emulator; 0 (unset): simulated only."""
    text = os.environ.get(EMU_ENV, "").strip()
    if not text:
        return 0
    if not text.isdigit():
        raise HalpError(f"{EMU_ENV}={text!r}: give a number of requests (0 or unset: no "
                        "emulated points)")
    return int(text)


def with_model(s: Scenario, model: dict[str, Any]) -> Scenario:
    return s.with_values({"model": model})


def simulated(models: Sequence[tuple[dict[str, Any], str]], devices: Sequence[int],
              methods: Sequence[str] = METHODS) -> list[dict[str, Any]]:
    """One row per model, number of devices and method, on the simulated Pi 4s."""
    rows = []
    for model, title in models:
        for n in devices:
            s = with_model(first_devices(SIM_SCENARIO, n), model)
            alone = latency_s(s, "standalone")
            for method in methods:
                latency = alone if method == "standalone" else latency_s(s, method)
                rows.append({"model": title, "devices": n, "method": method,
                             "latency_s": round(latency, 6), "standalone_s": round(alone, 6),
                             "speedup": round(alone / latency, 4)})
    return rows


def emu_scenario(model: dict[str, Any], title: str, method: str) -> Scenario:
    """scenarios/emu_vgg16_3dev.yaml with this model and method, one request."""
    name = "emu-" + re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-").lower() + "-3dev"
    changes = {"model": model, "method.name": method}
    return scenario(EMU_SCENARIO, **changes).with_values({"name": name})


def predicted_on_emulated_devices(models: Sequence[tuple[dict[str, Any], str]]
                                  ) -> list[dict[str, Any]]:
    """The simulator's speed-ups on the emulated devices, one row per model and method."""
    rows = []
    for model, title in models:
        s = emu_scenario(model, title, "standalone")
        alone = latency_s(s, "standalone")
        for method in EMU_METHODS:
            latency = latency_s(s, method)
            rows.append({"model": title, "backend": "sim", "devices": len(s.devices),
                         "method": method, "requests": 1, "latency_s": round(latency, 6),
                         "min_s": round(latency, 6), "max_s": round(latency, 6),
                         "standalone_s": round(alone, 6), "speedup": round(alone / latency, 4),
                         "exact": "", "interval_s": ""})
    return rows


def emulated(models: Sequence[tuple[dict[str, Any], str]], requests: int,
             predictions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Measured speed-ups on the emulator, one row per model and method (medians)."""
    from emu.backend import EmulatedRun

    rounds = min(EMU_ROUNDS, requests)
    per_round = math.ceil(requests / rounds)
    predicted = {(r["model"], r["method"]): r["latency_s"] for r in predictions}
    variants: dict[tuple[str, str], tuple[Scenario, float]] = {}
    for model, title in models:
        for method in EMU_METHODS:
            # Far enough apart that no request waits for the one before.
            interval = round(2.5 * predicted[(title, method)] + 0.5, 1)
            s = emu_scenario(model, title, method).with_values(
                {"workload.requests": per_round, "workload.arrival": "periodic",
                 "workload.interval": interval})
            variants[(title, method)] = (s, interval)
    first = next(iter(variants.values()))[0]
    # The open markers mean something only if emu-q still describes this machine in its quota.
    for line in check_profiles((d.profile for d in first.cluster().devices),
                               probe_in_quota=quota_runner("emu").probe_limited)[1]:
        print(f"speedup_models: {line}", file=sys.stderr, flush=True)
    traces: dict[tuple[str, str], list[Trace]] = {key: [] for key in variants}
    with tempfile.TemporaryDirectory(prefix="halp-speedup-models-") as tmp:
        run = EmulatedRun(first, Path(tmp), log=lambda line: None)
        with run.serving() as net:
            for r in range(rounds):
                for (title, method), (s, _) in variants.items():
                    print(f"speedup_models: emulating {title}, {method}, round {r + 1}/{rounds} "
                          f"({per_round} requests) ...", file=sys.stderr, flush=True)
                    policy = policy_for(s, prepared(s))
                    traces[(title, method)].append(
                        run.serve(net, s, policy, f"{s.name}-{method}-{r}"))
    rows = []
    for _, title in models:
        medians = {m: statistics.median(x for t in traces[(title, m)] for x in t.latencies())
                   for m in EMU_METHODS}
        for method in EMU_METHODS:
            s, interval = variants[(title, method)]
            latencies = [x for t in traces[(title, method)] for x in t.latencies()]
            exact = all((rec.extra or {}).get("relative_error", 0.0) <= TOLERANCE
                        for t in traces[(title, method)] for rec in t.requests)
            if max(latencies) > interval:
                print(f"speedup_models: {title} {method}: a request took {max(latencies):.2f} s, "
                      f"more than the {interval:g} s between arrivals; it may have waited",
                      file=sys.stderr, flush=True)
            rows.append({"model": title, "backend": "emu", "devices": len(s.devices),
                         "method": method, "requests": len(latencies),
                         "latency_s": round(medians[method], 6),
                         "min_s": round(min(latencies), 6), "max_s": round(max(latencies), 6),
                         "standalone_s": round(medians["standalone"], 6),
                         "speedup": round(medians["standalone"] / medians[method], 4),
                         "exact": exact, "interval_s": interval})
    return rows


def draw(rows: list[dict[str, Any]], titles: Sequence[str], out_dir: Path, stem: str,
         emu_rows: Sequence[dict[str, Any]] = ()) -> Path:
    cols = min(2, len(titles))
    nrows = math.ceil(len(titles) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 4.0 * nrows + 0.6),
                             sharey=True, squeeze=False)
    for ax, title in zip(axes.flat, titles, strict=False):
        for method in METHODS:
            points = [(r["devices"], r["speedup"]) for r in rows
                      if r["model"] == title and r["method"] == method]
            if not points:
                continue
            ax.plot([n for n, _ in points], [x for _, x in points],
                    marker="o", markersize=3.5, label=method, color=COLOURS[method],
                    linestyle="--" if method == "standalone" else "-",
                    linewidth=2.2 if method == "halp" else 1.2,
                    zorder=3 if method == "standalone" else 2)  # dashed over offload's 1.0
        for r in emu_rows:
            if r["model"] != title or r["method"] == "standalone":
                continue
            emulated = r["backend"] == "emu"
            ax.plot(r["devices"] + (0.1 if emulated else -0.1), r["speedup"],
                    linestyle="none", marker=EMU_MARKERS[r["backend"]],
                    markersize=13 if emulated else 7,
                    markerfacecolor=COLOURS[r["method"]] if emulated else "white",
                    markeredgecolor="black" if emulated else COLOURS[r["method"]],
                    markeredgewidth=0.8 if emulated else 1.6, zorder=5)
        ax.set_title(f"{title}, 100 Mbps star", fontsize=10)
        ax.set_xlabel("devices (host included)")
        ax.set_xticks(sorted({r["devices"] for r in rows}))
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(titles):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("speed-up against stand-alone")
    # Below the first row where there is one: VGG-16's HALP climbs through its upper left.
    axes.flat[2 if len(titles) > 2 else 0].legend(fontsize=8, loc="upper left",
                                                  title="simulated, Pi 4 (rpi4)", title_fontsize=8)
    if emu_rows:
        requests = max(r["requests"] for r in emu_rows if r["backend"] == "emu")
        handles = [Line2D([], [], linestyle="none", marker="*", markersize=12,
                          markerfacecolor="lightgrey", markeredgecolor="black",
                          label=f"emulated (median of {requests} req.)"),
                   Line2D([], [], linestyle="none", marker="D", markersize=7,
                          markerfacecolor="white", markeredgecolor="grey", markeredgewidth=1.6,
                          label="simulator, same devices")]
        axes.flat[min(1, len(titles) - 1)].legend(
            handles=handles, fontsize=8, loc="upper left", title_fontsize=8,
            title="3 emulated quarter cores (emu-q),\nHALP and MoDNN (colour)")
        caption = ("Lines: simulated, Raspberry Pi 4 profile rpi4 (fitted to published Pi 4 "
                   "times, not measured). Markers at three devices: EMULATED (stars; Mininet, "
                   "three quarter-core devices, profile emu-q)\nand the simulator's prediction "
                   "for those devices (open diamonds); "
                   f"{_relative_speed(rows, emu_rows, titles[0])}.")
    else:
        caption = ("All points simulated (Raspberry Pi 4 profile rpi4, fitted to published Pi 4 "
                   "times, not measured): one request on an idle cluster."
                   f" No emulated points ({EMU_ENV}=N adds them).")
    fig.suptitle("Speed-up of one request against the number of devices", fontsize=11)
    fig.text(0.5, 0.005, caption, ha="center", va="bottom", fontsize=7.5)
    fig.tight_layout(rect=(0, 0.05 if emu_rows else 0.03, 1, 1))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _relative_speed(rows: Sequence[dict[str, Any]], emu_rows: Sequence[dict[str, Any]],
                    title: str) -> str:
    """How much faster the emulated devices compute `title` than the simulated Pi 4s, and what
    that does to their speed-ups, from the two stand-alone latencies."""
    pi = next(float(r["standalone_s"]) for r in rows if r["model"] == title)
    emu = next(float(r["standalone_s"]) for r in emu_rows
               if r["model"] == title and r["backend"] == "sim")
    ratio = pi / emu
    if ratio >= 1:
        return (f"a quarter core computes {title} {ratio:.1f}x faster than the Pi 4, so the "
                "link weighs more and its speed-ups are lower")
    return (f"a quarter core computes {title} {1 / ratio:.1f}x slower than the Pi 4, so the "
            "link weighs less and its speed-ups are higher")


def main(out_dir: Path = OUT, models: Sequence[tuple[dict[str, Any], str]] = MODELS,
         devices: Sequence[int] = DEVICES, emu_requests: int | None = None) -> list[Path]:
    requests = emu_requests_from_env() if emu_requests is None else emu_requests
    if requests:  # refuse in one line before minutes of simulation
        try:
            ready_backend("emu", emu_scenario(*models[0], "standalone"))
        except HalpError as exc:
            raise HalpError(f"{exc} (unset {EMU_ENV} to draw the simulated part only)") from exc
    titles = [title for _, title in models]
    rows = simulated(models, devices)
    paths = [draw(rows, titles, out_dir, "speedup_models"),
             write_rows(rows, out_dir / "speedup_models.csv")]
    if requests:
        predictions = predicted_on_emulated_devices(models)
        emu_rows = predictions + emulated(models, requests, predictions)
        paths += [draw(rows, titles, out_dir, "speedup_models_emu", emu_rows),
                  write_rows(emu_rows, out_dir / "speedup_models_emu.csv")]
    return paths


if __name__ == "__main__":
    print("\n".join(str(p) for p in main()))
