"""Validation: how far the simulator's prediction is from a measured run of the same plans.

Pure comparison logic. The two traces join on (request, op): both backends executed the same
plan, so every op id of a request exists in both. Reported:

- per request, the latency error `|predicted - measured|`, in seconds and relative to the
  measured latency (`latency_error_mean` and `latency_error_max` are the relative ones, as
  fractions: 0.1 is 10 %);
- that error split in two: the run's `latency_bias` (the median of measured over predicted, less
  one: +0.1 when the run was 10 % slower than predicted as a whole) and `latency_spread_mean`,
  the per-request error that remains once every prediction is scaled by that one factor. The
  spread is the requests' difference from each other that one speed per device cannot explain
  (on an emulated quarter core it is the machine's own noise, see emu/README); the bias is
  what a profile off by a constant factor, or a machine that drifted since profiling, adds;
- per op kind (compute, transfer, gather), the MAPE of op durations in percent, over the ops
  whose measured duration is positive (an input op lasts no time on either side);
- the pairs themselves, for the scatter plot of predicted against measured.

Requests that only one side finished (a run cut short) are counted, not compared.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halp.cluster import Cluster
from halp.latency.probe import slowdown_of
from halp.scenario import Scenario
from halp.trace import Trace

KINDS = ("compute", "transfer", "gather")
# The per-request figures of a summary (what `uncalibrated` keeps of a second comparison).
ERROR_KEYS = ("latency_error_mean", "latency_error_max", "latency_bias", "latency_spread_mean",
              "predicted_latency_mean_s")


@dataclass
class Validation:
    requests: int  # compared: finished on both sides
    predicted_s: list[float]  # per compared request, in request order
    measured_s: list[float]
    op_pairs: dict[str, list[tuple[float, float]]]  # kind -> (predicted, measured) durations
    only_predicted: int = 0  # requests the measured run did not finish
    only_measured: int = 0
    unmatched_ops: int = 0  # ops of compared requests missing on one side
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def abs_errors_s(self) -> list[float]:
        return [abs(p - m) for p, m in zip(self.predicted_s, self.measured_s, strict=True)]

    @property
    def rel_errors(self) -> list[float]:
        return [abs(p - m) / m if m > 0 else float("inf")
                for p, m in zip(self.predicted_s, self.measured_s, strict=True)]

    @property
    def ratio(self) -> float | None:
        """The median of measured over predicted latency: the run's one best scale factor."""
        ratios = [m / p for p, m in zip(self.predicted_s, self.measured_s, strict=True) if p > 0]
        return statistics.median(ratios) if ratios else None

    @property
    def spread_errors(self) -> list[float]:
        """Per request, the relative error of the prediction scaled by `ratio`."""
        ratio = self.ratio
        if ratio is None:
            return []
        return [abs(p * ratio - m) / m if m > 0 else float("inf")
                for p, m in zip(self.predicted_s, self.measured_s, strict=True)]

    def mape(self, kind: str) -> float | None:
        pairs = [(p, m) for p, m in self.op_pairs.get(kind, []) if m > 0]
        if not pairs:
            return None
        return 100.0 * statistics.fmean(abs(p - m) / m for p, m in pairs)

    def summary(self) -> dict[str, Any]:
        rel, err = self.rel_errors, self.abs_errors_s
        ratio, spread = self.ratio, self.spread_errors
        return {
            "requests": self.requests,
            "latency_error_mean": statistics.fmean(rel) if rel else None,
            "latency_error_max": max(rel) if rel else None,
            "latency_bias": ratio - 1.0 if ratio is not None else None,
            "latency_spread_mean": statistics.fmean(spread) if spread else None,
            "latency_abs_error_mean_s": statistics.fmean(err) if err else None,
            "latency_abs_error_max_s": max(err) if err else None,
            "predicted_latency_mean_s": statistics.fmean(self.predicted_s) if rel else None,
            "measured_latency_mean_s": statistics.fmean(self.measured_s) if rel else None,
            "compute_op_mape": self.mape("compute"),
            "transfer_op_mape": self.mape("transfer"),
            "gather_op_mape": self.mape("gather"),
            "ops_compared": {k: len(v) for k, v in self.op_pairs.items()},
            "only_predicted": self.only_predicted,
            "only_measured": self.only_measured,
            "unmatched_ops": self.unmatched_ops,
            **self.meta,
        }


def emulation_mismatches(cluster: Cluster, threads: dict[str, int] | None = None) -> list[str]:
    """One line per device that the simulator predicts as another device than the emulator
    runs, as far as the scenario alone tells (the emulator adds what its probe of this machine
    tells, `emu.devices`, to the run's `meta.cpu.notes`). The emulator gives a device the speed
    of its profile x `speed` unless `cpu_share` is written; a profile measured under a quota
    describes that share of this machine's core, with the torch threads it was measured with."""
    lines = []
    for d in cluster.devices:
        profiled = int(d.profile.provenance.get("threads") or 1)
        used = (threads or {}).get(d.name, profiled)
        if used != profiled:
            lines.append(f"warning: device {d.name} runs torch with {used} thread(s), but profile "
                         f"{d.profile.name} was measured with {profiled}: measure it with "
                         f"`halp profile --threads {used}`")
        quota = d.profile.cpu_quota
        if quota is None:
            continue
        if d.cpu_share is not None and abs(quota[0] - d.cpu_share) > 0.01 * d.cpu_share:
            lines.append(f"warning: device {d.name} runs on {d.cpu_share:g} of a core in the "
                         f"emulator, but profile {d.profile.name} was measured on {quota[0]:g} "
                         f"of a core: use a profile measured with `halp profile --emu-cpu-share "
                         f"{d.cpu_share:g}`, or remove cpu_share")
        if d.speed != 1.0:
            lines.append(f"warning: device {d.name} has speed {d.speed:g} on profile "
                         f"{d.profile.name}, measured under a quota: the emulator scales the "
                         "quota by it, which is not the profile's device made faster or slower")
    return lines


def compare(predicted: Trace, measured: Trace) -> Validation:
    """Join two traces of the same plans on (request, op)."""
    pred_req = {r.request: r for r in predicted.requests}
    meas_req = {r.request: r for r in measured.requests}
    both = sorted(set(pred_req) & set(meas_req))
    pred_ops, meas_ops = predicted.by_key(), measured.by_key()
    pairs: dict[str, list[tuple[float, float]]] = {k: [] for k in KINDS}
    unmatched = 0
    wanted = set(both)
    for key in set(pred_ops) | set(meas_ops):
        if key[0] not in wanted:
            continue
        p, m = pred_ops.get(key), meas_ops.get(key)
        if p is None or m is None:
            unmatched += 1
            continue
        if m.kind in pairs:
            pairs[m.kind].append((p.duration, m.duration))
    return Validation(
        requests=len(both),
        predicted_s=[pred_req[r].latency for r in both],
        measured_s=[meas_req[r].latency for r in both],
        op_pairs=pairs,
        only_predicted=len(set(pred_req) - set(meas_req)),
        only_measured=len(set(meas_req) - set(pred_req)),
        unmatched_ops=unmatched,
    )


def format_summary(summary: dict[str, Any], target: float = 0.10) -> str:
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f}%"

    mean, worst = summary["latency_error_mean"], summary["latency_error_max"]
    if mean is None:
        return "no request finished on both sides; nothing to compare"
    verdict = "within" if mean <= target else "OUTSIDE"
    return "\n".join([
        f"{summary['requests']} requests compared: predicted {summary['predicted_latency_mean_s'] * 1e3:.1f} ms, "
        f"measured {summary['measured_latency_mean_s'] * 1e3:.1f} ms on average",
        f"per-request latency error: mean {mean * 100:.1f}% "
        f"({summary['latency_abs_error_mean_s'] * 1e3:.1f} ms), max {worst * 100:.1f}% "
        f"({summary['latency_abs_error_max_s'] * 1e3:.1f} ms); {verdict} the {target * 100:g}% target",
        *_split(summary),
        *_calibration(summary),
        f"op duration MAPE: compute {pct(summary['compute_op_mape'])}, transfer "
        f"{pct(summary['transfer_op_mape'])}, gather {pct(summary['gather_op_mape'])}",
    ])


def _split(summary: dict[str, Any]) -> list[str]:
    bias, spread = summary.get("latency_bias"), summary.get("latency_spread_mean")
    if bias is None or spread is None:
        return []
    pace = "slower" if bias > 0 else "faster"
    return [f"  of which: the run as a whole was {abs(bias) * 100:.1f}% {pace} than predicted "
            f"(bias); scaled by that one factor, the predictions are still {spread * 100:.1f}% "
            "off per request (spread between requests)"]


def _calibration(summary: dict[str, Any]) -> list[str]:
    used, plain = summary.get("calibration"), summary.get("uncalibrated")
    if not used or not plain or plain.get("latency_error_mean") is None:
        return []
    speeds = ", ".join(f"{name} x{1 / u['factor']:.2f}" if u.get("factor") else f"{name} unprobed"
                       for name, u in used.items())
    return [f"  calibrated: devices simulated at the speed probed around the run ({speeds}); "
            f"at their profiles' speed the error is {plain['latency_error_mean'] * 100:.1f}% "
            f"(bias {plain['latency_bias'] * 100:+.1f}%)"]


def scatter(validation: Validation, path: Path, title: str = "") -> Path:
    """Predicted against measured: op durations by kind (left), request latencies (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ops_ax, req_ax) = plt.subplots(1, 2, figsize=(10, 4.5))
    low, high = float("inf"), 0.0
    for kind, marker in zip(KINDS, ("o", "s", "^"), strict=True):
        pairs = [(p, m) for p, m in validation.op_pairs.get(kind, []) if p > 0 and m > 0]
        if not pairs:
            continue
        xs, ys = [m * 1e3 for _, m in pairs], [p * 1e3 for p, _ in pairs]
        ops_ax.scatter(xs, ys, s=12, marker=marker, alpha=0.6, label=f"{kind} ({len(pairs)})")
        low, high = min(low, *xs, *ys), max(high, *xs, *ys)
    if high > 0:
        ops_ax.plot([low, high], [low, high], color="grey", lw=1, ls="--")
        ops_ax.set_xscale("log")
        ops_ax.set_yscale("log")
    ops_ax.set_xlabel("measured op duration (ms)")
    ops_ax.set_ylabel("predicted op duration (ms)")
    ops_ax.legend(loc="upper left", fontsize=8)
    ops_ax.set_title("ops")
    xs = [m * 1e3 for m in validation.measured_s]
    ys = [p * 1e3 for p in validation.predicted_s]
    req_ax.scatter(xs, ys, s=16)
    if xs:
        lo, hi = min(*xs, *ys), max(*xs, *ys)
        req_ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--")
    req_ax.set_xlabel("measured latency (ms)")
    req_ax.set_ylabel("predicted latency (ms)")
    req_ax.set_title("requests")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---- calibration: the devices at the speed probed around a run --------------------------
def calibrated_cluster(cluster: Cluster, before: dict[str, dict[str, Any]],
                       after: dict[str, dict[str, Any]], keep: frozenset[str] = frozenset(),
                       ) -> tuple[Cluster, dict[str, Any]]:
    """`cluster` with each device slowed by its profile's slowdown over the run (the geometric
    mean of the probes before and after it), and per profile what was used. A profile without
    a probe to compare with keeps its speed, and says so; so do the devices in `keep` (the
    emulator dilated them by the probe of this machine already, `emu.devices`)."""
    used: dict[str, Any] = {}
    for name in before:
        ends = [slowdown_of(before[name]), slowdown_of(after.get(name, {}))]
        known = [x for x in ends if x is not None]
        factor = math.prod(known) ** (1 / len(known)) if known else None
        used[name] = {"slowdown_before": _round(ends[0]), "slowdown_after": _round(ends[1]),
                      "factor": _round(factor)}
    speeds = {d.name: d.speed / used[d.profile.name]["factor"] for d in cluster.devices
              if used.get(d.profile.name, {}).get("factor") and d.name not in keep}
    return cluster.with_speeds(speeds), used


def calibrated(scenario: Scenario, before: dict[str, dict[str, Any]],
               after: dict[str, dict[str, Any]], keep: frozenset[str] = frozenset(),
               ) -> tuple[Scenario, dict[str, Any]]:
    """`scenario` with each device's `speed` calibrated as `calibrated_cluster` says: what the
    simulator runs to predict for the machine as it was during the run. Plans are not made
    from it (the policy's plans stay those of the scenario as written)."""
    cluster, used = calibrated_cluster(scenario.cluster(), before, after, keep)
    speeds = {f"devices.{d.name}.speed": d.speed for d in cluster.devices}
    return scenario.with_values(speeds), used


def dilated_devices(meta: dict[str, Any]) -> frozenset[str]:
    """The devices an emulated run held to their speed by dilation (its `meta.cpu`)."""
    devices = (meta.get("cpu") or {}).get("devices") or {}
    return frozenset(name for name, d in devices.items() if d.get("core") is not None)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
