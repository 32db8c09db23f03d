"""Measuring a device: time the ops planners ask for, fit a profile, write it to a file.

Which ops are timed is `halp.latency.ops`, and how they are timed `halp.latency.timing`.

The fit, checked on held-out fused runs, is `halp.latency.profile_fit`, and writing the
profile file `halp.latency.profile_io`.
"""

from __future__ import annotations

import datetime
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from halp.errors import HalpError
from halp.latency.ops import DEFAULT_HEIGHTS
from halp.latency.probe import probe_machine
from halp.latency.profile import PROFILE_CFS_PERIOD_US, Profile, round_significant
from halp.latency.profile_fit import fit_profile
from halp.latency.timing import (
    BackgroundLoad,
    cpu_model,
    measure,
    measure_copy_s_per_byte,
    measure_message_overhead_s,
    steady_allocator,
)
from halp.model.zoo import ModelSpec


def measure_profile(models: Sequence[ModelSpec], name: str, *, heights: Sequence[float] = DEFAULT_HEIGHTS,
                    repeats: int = 5, threads: int = 1, max_run: int = 4, cpu_share: float = 1.0,
                    seed: int = 0, statistic: str = "min", command: str = "",
                    probe: dict[str, float] | None = None,
                    progress: Callable[[str], None] | None = None) -> Profile:
    """Measure this machine on `models` and fit its profile. `probe`: the machine's speed
    (`halp.latency.probe`), measured at full speed; under a quota (`cpu_share` < 1) this
    process cannot measure it, and the caller outside the quota passes it in; this process
    then probes inside the quota (`quota_probe`), with the clock its ops are timed by, before
    and after measuring: the mean of the two (the quota's speed drifts by minutes)."""
    began = time.perf_counter()
    if probe is None and cpu_share >= 1.0:
        probe = probe_machine(threads=threads)
    in_quota = [probe_machine(threads=threads, cpu_share=cpu_share)] if cpu_share < 1.0 else []
    with BackgroundLoad() as load:
        samples = measure(models, heights, repeats, threads, max_run, seed, statistic, progress,
                          cpu_share=cpu_share)
    if in_quota:
        in_quota.append(probe_machine(threads=threads, cpu_share=cpu_share))
    quota_probe = {name: float(f"{statistics.fmean(p[name] for p in in_quota):.4g}")
                   for name in in_quota[0]} if in_quota else None
    copy = measure_copy_s_per_byte(threads, cpu_share=cpu_share)
    message = measure_message_overhead_s()
    calls = sum(s.calls for s in samples)
    provenance = {
        "kind": "measured",
        "cpu": cpu_model(),
        "threads": threads,
        "cpu_share": cpu_share,
        "clock": "thread CPU time / cpu_share" if cpu_share < 1 else "wall",
        # Under a quota (--emu-cpu-share), the period it was measured in.
        **({"cfs_period_us": PROFILE_CFS_PERIOD_US} if cpu_share < 1 else {}),
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "hostname": platform.node(),
        "command": command,
        "models": [m.variant for m in models],
        "heights": [round(h, 4) for h in heights],
        "repeats": repeats,
        "statistic": statistic,
        "max_run": max_run,
        "samples": len(samples),
        "clean_calls": round(sum(s.clean for s in samples) / calls, 3) if calls else None,
        "background_cpu": load.share,
        "allocator": "glibc mallopt: no heap trim, mmap above 32 MiB" if steady_allocator() else "default",
        "measure_s": round(time.perf_counter() - began, 1),
        **({"probe": dict(probe)} if probe else {}),
        **({"quota_probe": quota_probe} if quota_probe else {}),
    }
    return fit_profile(samples, name, seed=seed, copy_s_per_byte=copy, message_overhead_s=message,
                       provenance=provenance)


DERIVED_HEADER = """\
# DERIVED latency profile: NOT MEASURED on the device it names. It is a measured profile scaled
# by `halp profile --derive-from` (halp.latency.profiler.derive_profile) under the assumption in
# provenance: FLOP and byte terms x compute_scale (chosen so VGG-16 takes vgg16_s_assumed),
# fixed costs (intercepts, op and message overheads) x overhead_scale, gather x copy_scale.
# Replace it with a measured one: run `halp hw profile` on the device itself.
"""


# ---- derived profiles ---------------------------------------------------------------------
def derive_profile(base: Profile, name: str, *, compute_scale: float, overhead_scale: float,
                   copy_scale: float, provenance: dict[str, Any]) -> Profile:
    """A profile for a device that was not measured, scaled from one that was: the terms that
    grow with the work (FLOPs, bytes) by `compute_scale`, the fixed costs (per-layer
    intercepts, per-op and per-message overheads: interpreter and dispatch time) by
    `overhead_scale`, and the gather's cost per byte by `copy_scale`."""
    if min(compute_scale, overhead_scale, copy_scale) <= 0:
        raise HalpError("scale factors of a derived profile must be positive")
    coefficients = {
        kind: {term: round_significant(value * (overhead_scale if term == "intercept_s" else compute_scale))
               for term, value in coef.items()}
        for kind, coef in base.coefficients.items()
    }
    return Profile(
        name=name, coefficients=coefficients,
        op_overhead_s=round_significant(base.op_overhead_s * overhead_scale),
        message_overhead_s=round_significant(base.message_overhead_s * overhead_scale),
        copy_s_per_byte=round_significant(base.copy_s_per_byte * copy_scale),
        provenance={"kind": "derived", "from": base.name, **provenance,
                    "compute_scale": round_significant(compute_scale), "overhead_scale": overhead_scale,
                    "copy_scale": copy_scale},
        held_out_mape=None,
    )
