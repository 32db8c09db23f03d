"""Measuring a device: time the ops planners ask for, fit a profile, write it to a file.

Which ops are timed is `halp.latency.ops`, and how they are timed `halp.latency.timing`.

The fit, checked on held-out fused runs, is `halp.latency.profile_fit`.
"""

from __future__ import annotations

import datetime
import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

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


HEADER = """\
# Latency profile of one device, measured and fitted by `halp profile` (halp/latency/profiler.py).
# Ops timed: run_region on row slices of the maps (heights x the map height, random positions),
# single layers and fused runs (a conv/dwconv/pool with the layers up to the next one, and runs
# of 2..max_run of those, the whole spatial part, the classifier), in shuffled round-robin
# passes; per op the `statistic` (min, median, mean) of `repeats` clean calls (this thread kept
# its core) after a warm-up, torch.set_num_threads(threads), glibc keeping freed memory.
# Under a CPU quota (provenance.cpu_share < 1, clock "thread CPU time / cpu_share") a call's
# time is its CPU time over the share: the op's time with ops back to back at that share.
# Per layer kind: t = intercept_s + s_per_flop*flops + s_per_in_byte*in_bytes
#   + s_per_out_byte*out_bytes + s_per_weight_byte*weight_bytes
#   + s_per_flop_per_tap*flops/(kernel taps)          (a missing term is 0),
# plus op_overhead_s once per fused run: non-negative least squares on relative error.
# held_out_mape: mean absolute percentage error (%) on the fused runs held out of the fit.
# copy_s_per_byte: torch.cat of row blocks. message_overhead_s: half the round trip of a
# 64-byte ZeroMQ REQ/REP message over TCP loopback (excludes bytes / bandwidth).
# provenance.probe: seconds of four fixed layers at full speed (halp/latency/probe.py), to tell
# whether this profile still describes the machine it is used on; under a CPU quota also
# provenance.quota_probe: the same layers inside the quota, timed as the ops are (the mean of
# a probe before and one after measuring).
"""


DERIVED_HEADER = """\
# DERIVED latency profile: NOT MEASURED on the device it names. It is a measured profile scaled
# by `halp profile --derive-from` (halp.latency.profiler.derive_profile) under the assumption in
# provenance: FLOP and byte terms x compute_scale (chosen so VGG-16 takes vgg16_s_assumed),
# fixed costs (intercepts, op and message overheads) x overhead_scale, gather x copy_scale.
# Replace it with a measured one: run `halp hw profile` on the device itself.
"""


def write_profile(profile: Profile, path: str | Path, header: str = HEADER) -> Path:
    """Write `profile` as YAML, with a comment header saying how it was measured."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.dump(_plain(profile.to_dict()), Dumper=_Dumper, sort_keys=False, width=1000)
    path.write_text(header + body)
    return path


class _Dumper(yaml.SafeDumper):
    """Block style, but a mapping of numbers (a kind's coefficients) or a list of plain values
    on one line."""

    def represent_dict(self, data):  # type: ignore[override]
        flow = bool(data) and all(isinstance(v, int | float | type(None)) for v in data.values())
        return self.represent_mapping("tag:yaml.org,2002:map", data, flow_style=flow)

    def represent_list(self, data):  # type: ignore[override]
        flow = all(not isinstance(v, dict | list) for v in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(dict, _Dumper.represent_dict)
_Dumper.add_representer(list, _Dumper.represent_list)


def _plain(value: Any) -> Any:
    """Plain YAML types (no numpy scalars, no tuples)."""
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, int) else k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str):
        return str(value)  # torch.__version__ is a str subclass that YAML refuses
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


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
