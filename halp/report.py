"""Reports from a Trace: latency statistics, speedup, deadline hit rate, utilisation, pictures.

Everything here reads records only (`OpRecord`, `RequestRecord`), so a simulated, emulated or
measured trace is reported the same way. Pictures use matplotlib's Agg canvas (no display).

- `summarise(trace, standalone_s)`: latency mean/p50/p95/max, speedup against a stand-alone
  latency (stand-alone / mean), the share of requests that met their deadline, throughput, and
  per resource the share of the run it was busy.
- `draw_timeline` / `timeline_png`: a Gantt chart, one row per device and per link, ops
  coloured by request, the plan's segments marked (hatched alternately and labelled `S0, S1..`).
- `bars_png`: methods side by side (mean latency with the p95 as a whisker, speedup on top).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from halp.plan import Compute, Gather, Plan, Transfer
from halp.trace import OpRecord, Trace

MAX_REQUESTS_DRAWN = 40


# ---- numbers ------------------------------------------------------------------------------
def latency_stats(latencies: Sequence[float]) -> dict[str, float | None]:
    if not latencies:
        return {"mean": None, "p50": None, "p95": None, "max": None}
    values = np.asarray(latencies, dtype=float)
    return {"mean": float(values.mean()), "p50": float(np.percentile(values, 50)),
            "p95": float(np.percentile(values, 95)), "max": float(values.max())}


def deadline_hit_rate(trace: Trace) -> float | None:
    """The share of requests that met their deadline (None when no request had one)."""
    met = [r.met for r in trace.requests if r.met is not None]
    return sum(met) / len(met) if met else None


def span(trace: Trace) -> tuple[float, float]:
    """From the first arrival to the last op's end (or the last finish)."""
    starts = [r.arrival for r in trace.requests] + [r.start for r in trace.ops]
    ends = [r.finish for r in trace.requests] + [r.end for r in trace.ops]
    if not starts:
        return 0.0, 0.0
    return min(starts), max(ends)


def busy_s(records: Sequence[OpRecord]) -> float:
    """Time covered by the records' intervals (overlaps counted once)."""
    total, until = 0.0, -math.inf
    for r in sorted(records, key=lambda r: r.start):
        if r.end <= until:
            continue
        total += r.end - max(r.start, until)
        until = r.end
    return total


def utilisation(trace: Trace) -> dict[str, float]:
    """Per resource (device or link), the share of the run's span it was busy."""
    t0, t1 = span(trace)
    by_resource: dict[str, list[OpRecord]] = defaultdict(list)
    for r in trace.ops:
        if r.kind != "input":
            by_resource[r.resource].append(r)
    length = t1 - t0
    return {name: (busy_s(records) / length if length > 0 else 0.0)
            for name, records in sorted(by_resource.items())}


def summarise(trace: Trace, standalone_s: float | None = None) -> dict[str, Any]:
    """The numbers a run reports. Speedup is stand-alone latency over mean latency."""
    stats = latency_stats(trace.latencies())
    mean = stats["mean"]
    t0, t1 = span(trace)
    finished = len(trace.requests)
    return {
        "method": trace.method,
        "backend": trace.backend,
        "requests": finished,
        "latency_s": stats,
        "standalone_latency_s": standalone_s,
        "speedup": (standalone_s / mean if standalone_s and mean else None),
        "deadline_hit_rate": deadline_hit_rate(trace),
        "throughput_rps": (finished / (t1 - t0) if finished and t1 > t0 else None),
        "span_s": t1 - t0,
        "utilisation": utilisation(trace),
        "bytes_sent": sum(r.bytes for r in trace.ops if r.kind == "transfer"),
        **served_models(trace),
    }


def served_models(trace: Trace) -> dict[str, Any]:
    """Which model variants served the requests, their mean top-1 accuracy, and how far the
    latency predicted at choice time was from the latency the request took."""
    choices: dict[str, int] = {}
    for r in trace.requests:
        choices[r.model] = choices.get(r.model, 0) + 1
    accuracies = [r.top1 for r in trace.requests if r.top1 is not None]
    errors = [abs(r.predicted_s - r.latency) / r.latency for r in trace.requests
              if r.predicted_s is not None and r.latency > 0]
    return {
        "choices": choices,
        "mean_top1": sum(accuracies) / len(accuracies) if accuracies else None,
        "prediction_error_mean": sum(errors) / len(errors) if errors else None,
    }


# ---- pictures -----------------------------------------------------------------------------
def segment_of(plan: Plan) -> dict[str, int]:
    """Op id -> index of the plan segment it belongs to: a compute by its first layer; a
    transfer to the host or a gather at boundary b closes the segment ending at b; any other
    transfer feeds the segment starting at b. Ops outside every segment are left out."""
    out: dict[str, int] = {}
    for op in plan.ops:
        if isinstance(op, Compute):
            closes, at = False, op.start
        elif isinstance(op, Gather):
            closes, at = True, op.boundary
        elif isinstance(op, Transfer):
            closes, at = op.dst == plan.host, op.boundary
        else:
            continue
        for k, (a, b) in enumerate(plan.segments):
            if (a < at <= b) if closes else (a <= at < b):
                out[op.id] = k
                break
    return out


def _rows(trace: Trace, plan: Plan | None) -> list[str]:
    resources = {r.resource for r in trace.ops if r.kind != "input"}
    devices = [d for d in (plan.devices if plan else []) if d in resources]
    devices += sorted(r for r in resources if "->" not in r and r != "channel" and r not in devices)
    links = sorted(r for r in resources if r not in devices)
    return devices + links


def draw_timeline(ax: Any, trace: Trace, plan: Plan | None = None,
                  requests: Sequence[int] | None = None, title: str | None = None,
                  origin: float | None = None) -> None:
    """A Gantt chart of `trace` on a matplotlib axis (times in ms from `origin`, by default
    the first arrival drawn)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    chosen = sorted({r.request for r in trace.requests} | {r.request for r in trace.ops})
    if requests is not None:
        wanted = set(requests)
        chosen = [r for r in chosen if r in wanted]
    clipped = len(chosen) > MAX_REQUESTS_DRAWN
    chosen = chosen[:MAX_REQUESTS_DRAWN]
    keep = set(chosen)
    records = [r for r in trace.ops if r.request in keep and r.kind != "input"]
    rows = _rows(trace, plan)
    index = {name: i for i, name in enumerate(rows)}
    if origin is None:
        arrivals = [q.arrival for q in trace.requests if q.request in keep]
        origin = min(arrivals or [r.start for r in records] or [0.0])
    segments = segment_of(plan) if plan is not None else {}
    colours = plt.get_cmap("tab10" if len(chosen) <= 10 else "tab20")
    colour_of = {req: colours(k % colours.N) for k, req in enumerate(chosen)}
    bars: dict[tuple[int, int, bool], list[tuple[float, float]]] = defaultdict(list)
    extent_ms = (max([r.end for r in records], default=origin) - origin) * 1e3
    for r in records:
        y = index[r.resource]
        seg = segments.get(r.op)
        x0, width = (r.start - origin) * 1e3, (r.end - r.start) * 1e3
        bars[(y, r.request, seg is not None and seg % 2 == 1)].append((x0, width))
        if seg is not None and r.kind == "compute" and len(chosen) <= 2 and width > 0.025 * extent_ms:
            ax.text(x0 + width / 2, y, f"S{seg}", ha="center", va="center", fontsize=6,
                    clip_on=True)
    edges = 0.4 if len(chosen) <= 3 else 0.0
    for (y, request, odd), spans in bars.items():
        ax.broken_barh(spans, (y - 0.35, 0.7), facecolors=colour_of[request],
                       edgecolor="black", linewidth=edges, hatch="///" if odd else None)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("time (ms)")
    ax.grid(axis="x", alpha=0.3)
    label = title or f"{trace.method} on {trace.backend}"
    if clipped:
        label += f" (first {MAX_REQUESTS_DRAWN} requests)"
    ax.set_title(label, fontsize=10)
    handles = []
    if 1 < len(chosen) <= 10:
        handles += [Patch(color=colour_of[r], label=f"request {r}") for r in chosen]
    if segments:
        handles += [Patch(facecolor="white", edgecolor="black", label="even segment"),
                    Patch(facecolor="white", edgecolor="black", hatch="///", label="odd segment")]
    if handles:
        ax.legend(handles=handles, fontsize=6, loc="upper right", ncol=2)


def timeline_png(trace: Trace, path: Path, plan: Plan | None = None,
                 requests: Sequence[int] | None = None, title: str | None = None) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(2, len(_rows(trace, plan)))
    fig, ax = plt.subplots(figsize=(11, 0.45 * rows + 1.4))
    draw_timeline(ax, trace, plan, requests, title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bars_png(summaries: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Methods side by side: mean latency under the workload (whisker to p95, speedup above),
    and, when the summaries carry `single_request_s`, one request on an idle cluster beside it.
    The latency axis turns logarithmic when the bars differ by more than 20 times."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [s for s in summaries if (s.get("latency_s") or {}).get("mean") is not None]
    names = [s["method"] for s in rows]
    colours = [("#d62728" if n == "halp" else "#1f77b4") for n in names]
    single = all(s.get("single_request_s") is not None for s in rows) and rows
    fig, axes = plt.subplots(1, 2 if single else 1, figsize=((1.0 * max(len(rows), 3) + 1.5) * (2 if single else 1), 4),
                             squeeze=False)
    x = np.arange(len(rows))
    means = np.array([s["latency_s"]["mean"] for s in rows]) * 1e3
    p95 = np.array([s["latency_s"]["p95"] for s in rows]) * 1e3
    ax = axes[0][-1]
    ax.bar(x, means, color=colours)
    ax.errorbar(x, means, yerr=[np.zeros_like(means), p95 - means], fmt="none", ecolor="black",
                capsize=4, linewidth=1)
    for xi, s, top in zip(x, rows, np.maximum(means, p95), strict=True):
        if s.get("speedup"):
            ax.text(xi, top, f"{s['speedup']:.2f}x", ha="center", va="bottom", fontsize=8)
    ax.set_title("under the workload: mean, whisker to p95", fontsize=9)
    panels = [(ax, means)]
    if single:
        ax1 = axes[0][0]
        one = np.array([s["single_request_s"] for s in rows]) * 1e3
        ax1.bar(x, one, color=colours)
        alone = rows[0].get("standalone_latency_s")
        for xi, v in zip(x, one, strict=True):
            if alone:
                ax1.text(xi, v, f"{alone * 1e3 / v:.2f}x", ha="center", va="bottom", fontsize=8)
        ax1.set_title("one request on an idle cluster", fontsize=9)
        panels.append((ax1, one))
    for a, values in panels:
        a.set_xticks(x, names, rotation=20)
        a.set_ylabel("latency (ms)")
        a.grid(axis="y", alpha=0.3)
        if len(values) and values.min() > 0 and values.max() / values.min() > 20:
            a.set_yscale("log")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
