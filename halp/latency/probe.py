"""A machine's speed in a fraction of a second: a few fixed layers timed at full speed.

Why: a profile describes the machine it was measured on, and a virtual machine is not always
the same machine. On 2026-12-04 this workplace's VM (same CPU name, "AMD EPYC") ran
stand-alone VGG-16 in 327 ms on one thread where the profile measured on 2026-11-22 predicted
199 ms, and MobileNet-V1 in 18.2 ms against 16.4: the layer kinds drift apart, so one factor
would not do. `halp profile` stores this probe in the profile's provenance (`probe`), and
`halp validate --against emu`, whose emulated devices are this machine held to a share,
probes again and says when a profile no longer describes the machine it runs on. Without
that, a validation measures how far today's machine is from the profiling day's, not how
well the simulator predicts.

The layers are the shapes the zoo's models spend their time in: a 3x3 convolution (VGG-16),
a depthwise 3x3 and a pointwise 1x1 convolution (MobileNet-V1), a large linear layer (the
classifiers, bound by memory bandwidth). Each is timed at full speed, in the calling process,
on `threads` threads, with the allocator the profiler and the runtime use (glibc keeping freed
memory; without it the depthwise layer took 3-7x as long, varying by process): the
minimum of `repeats` calls in round-robin passes, which a busy neighbour moves less than a mean.

A profile measured under a CPU quota (`halp profile --emu-cpu-share`) also holds a *quota
probe* (`quota_probe`): the same layers timed inside the quota, as that profile times its ops
(the thread's CPU time over the share, the mean of every call). The two can disagree: a
throttled thread's caches go cold in every pause, and how cold depends on what else the
physical machine runs. On 2026-12-05 the full-speed probe found a fresh VM within 17% of the
day before, while its quarter cores ran MobileNet-V1 1.8x as long as `emu-q` predicted (157
against 85 ms; a profile measured that hour predicted 166).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from halp.latency.ops import OpSpec
from halp.latency.profile import Profile
from halp.latency.timing import call_seconds, input_dims, steady_allocator
from halp.model.graph import ModelGraph, Region
from halp.runtime.dilation import MAX_RUNS

# name -> (layer, input shape): each takes 0.2 to 5 ms on one core of a current server CPU.
LAYERS: dict[str, Callable[[], tuple[nn.Module, tuple[int, ...]]]] = {
    "conv3x3": lambda: (nn.Conv2d(64, 64, 3, padding=1), (1, 64, 56, 56)),
    "dwconv3x3": lambda: (nn.Conv2d(256, 256, 3, padding=1, groups=256), (1, 256, 56, 56)),
    "conv1x1": lambda: (nn.Conv2d(256, 256, 1), (1, 256, 28, 28)),
    "linear": lambda: (nn.Linear(4096, 4096), (1, 4096)),
}
# A layer more than 25% faster or slower than where the profile was measured. The same VM
# drifts by 10-20% from one minute to the next (probe slowdowns 0.76-1.20 over an hour on
# 2026-12-04); another machine was 1.6x off.
TOLERANCE = 0.25
# Inside a quota the layers drift more: four probes in a row on 2026-12-05 spread 14.6-19.6 ms
# (conv3x3), and against the profile measured that hour they were 1.1-1.6x slower while its
# predictions of the next runs were within 7%. A new VM was 1.8x off (43% error).
QUOTA_TOLERANCE = 0.5


def probe_machine(repeats: int = 30, threads: int = 1, cpu_share: float = 1.0) -> dict[str, float]:
    """Seconds per call of each probe layer on this machine now: the minimum of `repeats` at
    full speed; inside a CPU quota (`cpu_share` < 1, one thread), the mean of every call's CPU
    time over the share, as `halp profile` times ops there (what throttling costs included)."""
    steady_allocator()  # as profiled and run: without it, every call here faults fresh pages
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    prepared = [(name, *make()) for name, make in LAYERS.items()]
    calls: dict[str, list[float]] = {name: [] for name in LAYERS}
    try:
        with torch.inference_mode():
            inputs = [torch.randn(shape, generator=generator) for _, _, shape in prepared]
            for (_, layer, _), x in zip(prepared, inputs, strict=True):
                layer(x)  # warm-up: first-touch pages, kernel choice
            for _ in range(repeats):  # round robin: a slow spell costs every layer one call
                for (name, layer, _), x in zip(prepared, inputs, strict=True):
                    t0, c0 = time.perf_counter(), time.thread_time()
                    layer(x)
                    t1, c1 = time.perf_counter(), time.thread_time()
                    calls[name].append(call_seconds(t1 - t0, c1 - c0, cpu_share))
    finally:
        torch.set_num_threads(previous)
    pick = min if cpu_share >= 1.0 else (lambda times: sum(times) / len(times))
    return {name: float(f"{pick(times):.4g}") for name, times in calls.items()}


def probe_ops(ops: Sequence[tuple[ModelGraph, int, int, Region]], threads: int = 1,
              rounds: int = 5) -> list[float]:
    """Seconds of CPU per call of each op (stages [start, stop) of a graph producing a region;
    wall seconds on several threads) on this machine now, as a dilated device counts them
    (`halp.runtime.dilation`): each op run `MAX_RUNS` times in a row, the least CPU time, and the median
    over `rounds` round-robin passes. The emulator's probe of the work a device is about to run
    (`emu.devices`). Measured in one process on 2026-12-06, MobileNet-V1 read 23.2-23.7 ms this
    way four times in a row, and 23.3-26.2 ms as `halp profile` times ops (the least of three
    calls, each op after another)."""
    steady_allocator()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    prepared = []
    for graph, start, stop, out in ops:
        spec = OpSpec(graph, start, stop, out)
        xs = tuple(torch.randn(input_dims(shape, held), generator=generator)
                   for shape, held in spec.inputs())
        prepared.append((spec.runner(), xs))
    # One thread's CPU time says nothing of ops on several: their wall time then.
    clock = time.thread_time if threads == 1 else time.perf_counter
    calls: list[list[float]] = [[] for _ in prepared]
    try:
        with torch.inference_mode():
            for run, xs in prepared:  # warm-up: first-touch pages, kernel choice
                run(xs)
            for _ in range(rounds):
                for (run, xs), mine in zip(prepared, calls, strict=True):
                    least = float("inf")
                    for _ in range(MAX_RUNS):
                        c0 = clock()
                        run(xs)
                        least = min(least, clock() - c0)
                    mine.append(least)
    finally:
        torch.set_num_threads(previous)
    return [statistics.median(mine) for mine in calls]


def slowdowns(recorded: Mapping[str, float], now: Mapping[str, float]) -> dict[str, float]:
    """Per probe layer both have: how many times longer it takes now than when recorded."""
    return {name: now[name] / recorded[name] for name in recorded
            if name in now and recorded[name] > 0}


def slowdown_of(check: Mapping[str, Any]) -> float | None:
    """One factor for a profile's `check_profiles` entry: how many times longer its device's
    compute takes now than when profiled. The median over probe layers, taken inside the
    profile's CPU quota when it has one (that is the device), else at full speed; None when
    the profile holds no probe to compare with."""
    ratios = check.get("slowdown_in_quota") or check.get("slowdown") or {}
    return statistics.median(ratios.values()) if ratios else None


def describes_this_machine(provenance: Mapping[str, object], now: Mapping[str, float],
                           tolerance: float = TOLERANCE, key: str = "probe",
                           ) -> tuple[bool | None, dict[str, float]]:
    """Whether a profile with this provenance still describes the machine probed as `now`:
    True, False, or None when the profile holds no such probe (measured before probes, or
    derived); and the slowdown per probe layer. `key`: which of the profile's probes `now` is
    comparable with, "probe" (full speed) or "quota_probe" (inside the profile's CPU quota)."""
    recorded = provenance.get(key)
    if not isinstance(recorded, Mapping) or provenance.get("kind") != "measured":
        return None, {}
    ratios = slowdowns({str(k): float(v) for k, v in recorded.items()}, now)
    if not ratios:
        return None, {}
    return all(abs(r - 1.0) <= tolerance for r in ratios.values()), ratios


# Measures the probe inside a CPU quota: (share of a core, threads) -> seconds per layer. Only
# a backend that can hold a process to a share has one (the emulator's `probe_limited`).
ProbeInQuota = Callable[[float, int], dict[str, float]]


def check_profiles(profiles: Iterable[Profile], probe_in_quota: ProbeInQuota | None = None,
                   ) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Probe this machine (once per thread count) and check each distinct profile against it:
    per profile name, whether it describes this machine and the slowdown per probe layer; and
    one line for each that does not, or cannot tell, saying how to measure it again.

    A profile measured under a CPU quota describes an emulated device, whose speed is the
    quota's, not the core's: with `probe_in_quota`, the probe is also taken inside that quota
    (once per share and thread count), reported as `slowdown_in_quota`, and it decides (within
    `QUOTA_TOLERANCE`); the full-speed slowdown is then only reported."""
    found: dict[str, Profile] = {}
    for profile in profiles:
        found.setdefault(profile.name, profile)
    checks: dict[str, dict[str, Any]] = {}
    lines: list[str] = []
    probes: dict[int, dict[str, float]] = {}
    in_quota: dict[tuple[float, int], dict[str, float]] = {}
    for name, profile in found.items():
        prov = profile.provenance
        threads = int(prov.get("threads") or 1)
        if threads not in probes:
            probes[threads] = probe_machine(threads=threads)
        fits, ratios = describes_this_machine(prov, probes[threads])
        checks[name] = {"describes_this_machine": fits,
                        "slowdown": {k: round(v, 3) for k, v in ratios.items()}}
        where, missing = "", "machine probe"
        quota = profile.cpu_quota
        if quota is not None and probe_in_quota is not None:
            share = quota[0]
            if (share, threads) not in in_quota:
                in_quota[(share, threads)] = probe_in_quota(share, threads)
            fits, ratios = describes_this_machine(prov, in_quota[(share, threads)],
                                                  QUOTA_TOLERANCE, key="quota_probe")
            checks[name].update(describes_this_machine=fits, slowdown_in_quota={
                k: round(v, 3) for k, v in ratios.items()})
            where = f" inside its CPU quota ({share:g} of a core)"
            missing = f"probe taken{where}"
        again = f"; measure it again here: {prov['command']}" if prov.get("command") else ""
        if prov.get("kind") == "derived":  # scaled for a device that is not here
            lines.append(f"note: profile {name} is derived, not measured: it describes no "
                         f"machine here; measure one with `halp profile`")
        elif fits is None:
            lines.append(f"note: profile {name} holds no {missing}, so whether it "
                         f"describes this machine is unknown{again}")
        elif not fits:
            worst = max(ratios, key=lambda k: abs(ratios[k] - 1.0))
            lines.append(f"warning: profile {name} does not describe this machine{where}: "
                         f"{worst} takes {ratios[worst]:.2f}x as long here as where it was "
                         f"measured ({prov.get('date', 'undated')}); predictions will be off "
                         f"by as much{again}")
    return checks, lines


def predicted_probe(profile: Profile) -> dict[str, float]:
    """Seconds per call of each probe layer on the device `profile` describes, as the simulator
    predicts it (the same arithmetic as a compute op of the whole layer): how the emulator
    compares a profile with this machine when the profile holds no probe of its own (a
    derived profile describes a device that is not here)."""
    from halp.model.trace import trace_model

    predicted = {}
    for name, make in LAYERS.items():
        layer, shape = make()
        if len(shape) == 2:  # a linear layer: a flat map, as a classifier sees it
            module, chw = nn.Sequential(nn.Flatten(), layer), (shape[1], 1, 1)
        else:
            module, chw = nn.Sequential(layer), (shape[1], shape[2], shape[3])
        graph = trace_model(module, chw, name)
        end = len(graph.layers)
        predicted[name] = profile.op_overhead_s + sum(
            profile.layer_s(spec, held, out)
            for spec, held, out in graph.layer_regions(0, end, graph.full(end)))
    return predicted
