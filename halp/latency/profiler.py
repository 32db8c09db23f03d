"""Measuring a device's profile from start to end: the one place where the steps meet.

`measure_profile` probes the machine's speed (`halp.latency.probe`), times the ops planners
ask for (`halp.latency.ops` chooses them, `halp.latency.timing` times them) while watching how
busy other processes keep the machine, measures the gather and message costs, records where
and how it measured (the provenance), and fits the profile (`halp.latency.profile_fit`).
`halp profile` writes it to a file (`halp.latency.profile_io`).
"""

from __future__ import annotations

import datetime
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from halp.latency.hop import measure_message_overhead_s, measure_message_s_per_byte
from halp.latency.ops import DEFAULT_HEIGHTS
from halp.latency.probe import probe_machine
from halp.latency.profile import PROFILE_CFS_PERIOD_US, Profile
from halp.latency.profile_fit import fit_profile
from halp.latency.timing import (
    BackgroundLoad,
    cpu_model,
    emulation,
    measure,
    measure_copy_s_per_byte,
    steady_allocator,
)
from halp.model.zoo import ModelSpec


def measure_profile(models: Sequence[ModelSpec], name: str, *,
                    heights: Sequence[float] = DEFAULT_HEIGHTS, repeats: int = 5, threads: int = 1,
                    max_run: int = 4, cpu_share: float = 1.0, seed: int = 0,
                    statistic: str = "min", command: str = "",
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
    message_per_byte = measure_message_s_per_byte()
    calls = sum(s.calls for s in samples)
    emulated = emulation()
    provenance = {
        "kind": "measured",
        # Under emulation (an arm64 userland run by qemu-user on x86, say) every number below
        # is the translator's speed, not a device's: such a profile is no timing reference.
        **({"emulated": emulated, "timing": "NO TIMING REFERENCE: measured under emulation; "
            "use it to test the tooling, never to plan or validate"} if emulated else {}),
        "cpu": cpu_model(),
        "machine": platform.machine(),
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
        "allocator": ("glibc mallopt: no heap trim, mmap above 32 MiB" if steady_allocator()
                      else "default"),
        "measure_s": round(time.perf_counter() - began, 1),
        **({"probe": dict(probe)} if probe else {}),
        **({"quota_probe": quota_probe} if quota_probe else {}),
    }
    return fit_profile(samples, name, seed=seed, copy_s_per_byte=copy, message_overhead_s=message,
                       message_s_per_byte=message_per_byte,
                       provenance=provenance)
