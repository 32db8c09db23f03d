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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from halp.latency.profile import Profile

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


def probe_machine(repeats: int = 30, threads: int = 1) -> dict[str, float]:
    """Seconds per call of each probe layer on this machine now (minimum of `repeats`)."""
    from halp.latency.profiler import steady_allocator  # (it imports this module)

    steady_allocator()  # as profiled and run: without it, every call here faults fresh pages
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    prepared = [(name, *make()) for name, make in LAYERS.items()]
    best = dict.fromkeys(LAYERS, float("inf"))
    try:
        with torch.inference_mode():
            inputs = [torch.randn(shape, generator=generator) for _, _, shape in prepared]
            for (_, layer, _), x in zip(prepared, inputs, strict=True):
                layer(x)  # warm-up: first-touch pages, kernel choice
            for _ in range(repeats):  # round robin: a slow spell costs every layer one call
                for (name, layer, _), x in zip(prepared, inputs, strict=True):
                    t0 = time.perf_counter()
                    layer(x)
                    best[name] = min(best[name], time.perf_counter() - t0)
    finally:
        torch.set_num_threads(previous)
    return {name: float(f"{seconds:.4g}") for name, seconds in best.items()}


def slowdowns(recorded: Mapping[str, float], now: Mapping[str, float]) -> dict[str, float]:
    """Per probe layer both have: how many times longer it takes now than when recorded."""
    return {name: now[name] / recorded[name] for name in recorded
            if name in now and recorded[name] > 0}


def describes_this_machine(provenance: Mapping[str, object], now: Mapping[str, float],
                           tolerance: float = TOLERANCE) -> tuple[bool | None, dict[str, float]]:
    """Whether a profile with this provenance still describes the machine probed as `now`:
    True, False, or None when the profile holds no probe (measured before probes, or
    derived); and the slowdown per probe layer."""
    recorded = provenance.get("probe")
    if not isinstance(recorded, Mapping) or provenance.get("kind") != "measured":
        return None, {}
    ratios = slowdowns({str(k): float(v) for k, v in recorded.items()}, now)
    if not ratios:
        return None, {}
    return all(abs(r - 1.0) <= tolerance for r in ratios.values()), ratios


def check_profiles(profiles: Iterable[Profile]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Probe this machine (once per thread count) and check each distinct profile against it:
    per profile name, whether it describes this machine and the slowdown per probe layer; and
    one line for each that does not, or cannot tell, saying how to measure it again."""
    found: dict[str, Profile] = {}
    for profile in profiles:
        found.setdefault(profile.name, profile)
    checks: dict[str, dict[str, Any]] = {}
    lines: list[str] = []
    probes: dict[int, dict[str, float]] = {}
    for name, profile in found.items():
        prov = profile.provenance
        threads = int(prov.get("threads") or 1)
        if threads not in probes:
            probes[threads] = probe_machine(threads=threads)
        fits, ratios = describes_this_machine(prov, probes[threads])
        checks[name] = {"describes_this_machine": fits,
                        "slowdown": {k: round(v, 3) for k, v in ratios.items()}}
        again = f"; measure it again here: {prov['command']}" if prov.get("command") else ""
        if fits is None:
            lines.append(f"note: profile {name} holds no machine probe, so whether it "
                         f"describes this machine is unknown{again}")
        elif not fits:
            worst = max(ratios, key=lambda k: abs(ratios[k] - 1.0))
            lines.append(f"warning: profile {name} does not describe this machine: {worst} "
                         f"takes {ratios[worst]:.2f}x as long here as where it was measured "
                         f"({prov.get('date', 'undated')}); predictions will be off by as "
                         f"much{again}")
    return checks, lines
