"""How the emulator makes each device as fast as the simulator says it is (pure: the machine's
probe and core list come in as arguments).

A device's speed in the simulator is its profile's times divided by `speed`. The emulator runs
the device on this machine, so it needs that speed *relative to this machine*: its
**slowdown**, how many times longer an op takes on the device than on one of this machine's
cores. It comes from the probe (`halp.latency.probe`): four fixed layers timed here now,
against the same layers on the device (the profile's own probe when it holds one measured with
the same threads, else the profile's prediction of them), divided by `speed`; one factor, the
geometric mean over the layers, each weighted by how much of the device's work in the plans it
stands for (`work_of`: 3x3 convolutions for VGG-16, 1x1 and depthwise ones for MobileNet). A written `cpu_share` overrides it (slowdown = threads /
cpu_share), and when the profile says otherwise by more than `TOLERANCE` the emulator says so.

Two ways to hold a device to its slowdown (`backends.emu.cpu_model`):

- **dilate**: the device's compute runs at full speed on a core of its own and each op's
  result is released after its CPU time x slowdown (`halp.runtime.dilation`). Steady for ops
  of any length, but it needs a core per device (devices bursting at full speed on shared
  cores inflate each other's CPU time), one-thread devices (the CPU time is the compute
  thread's), and a profile of a whole core (one measured under a quota describes a quota).
- **quota**: a CFS quota of threads / slowdown of a core, as before. Any number of devices,
  but the kernel enforces it in whole periods at its 4 ms tick: ops shorter than a few periods
  run in steps of one period (emu/README.md).

`auto` (the default) dilates when it can, else uses the quota and says why.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from halp.errors import BackendError
from halp.latency.probe import predicted_probe
from halp.latency.profile import Profile
from halp.model.graph import CONV, DWCONV, LINEAR, LayerSpec, ModelGraph
from halp.plan import Compute, Plan
from halp.scenario import Scenario

CpuModel = Literal["dilate", "quota"]
DILATE: CpuModel = "dilate"
QUOTA: CpuModel = "quota"
# A written cpu_share and the profile's speed may differ by this much before the emulator says
# so: the same VM drifts by 10-20% between minutes (halp.latency.probe.TOLERANCE).
TOLERANCE = 0.25
# A device no more than this much faster than this machine runs at this machine's speed (the
# probe's drift); faster than that, the emulator cannot run it.
FASTER_ALLOWED = 1.0 + TOLERANCE
# Below this many microseconds of quota per period, the period is lengthened: the kernel's
# minimum quota is 1 ms.
MIN_QUOTA_US = 1000

# threads -> seconds per probe layer on this machine now (halp.latency.probe.probe_machine)
Probe = Callable[[int], Mapping[str, float]]
# device -> probe layer -> seconds of the device's work that layer stands for (`work_of`)
Work = Mapping[str, Mapping[str, float]]


@dataclass(frozen=True)
class EmulatedDevice:
    """What the emulator gives one device."""

    name: str
    slowdown: float  # times longer an op takes than on this machine's core(s)
    cpu_share: float  # the quota model: share of one core
    core: int | None  # the dilate model: the core its compute runs on alone
    source: str  # where the slowdown comes from, for the log line

    def describe(self) -> str:
        where = f"core {self.core}" if self.core is not None else f"{self.cpu_share:.3g} of a core"
        return f"{self.name} {self.slowdown:.3g}x slower than this machine ({self.source}) on {where}"


@dataclass(frozen=True)
class DevicePlan:
    """The CPU model of a run and every device's part in it, with the lines to say first."""

    model: CpuModel
    devices: tuple[EmulatedDevice, ...]
    cfs_period_us: int
    notes: tuple[str, ...]

    def device(self, name: str) -> EmulatedDevice:
        return next(d for d in self.devices if d.name == name)

    def summary(self) -> str:
        """One line: which model, and each device's speed."""
        return f"cpu model {self.model}: " + "; ".join(d.describe() for d in self.devices)

    def to_meta(self) -> dict[str, object]:
        return {"cpu_model": self.model, "cfs_period_us": self.cfs_period_us,
                "notes": list(self.notes),
                "devices": {d.name: {"slowdown": round(d.slowdown, 4),
                                     "cpu_share": round(d.cpu_share, 4), "core": d.core,
                                     "source": d.source} for d in self.devices}}


def plan_devices(scenario: Scenario, profiles: Mapping[str, Profile], cores: list[int],
                 probe: Probe, work: Work | None = None) -> DevicePlan:
    """Each device's slowdown and the CPU model that holds it (see the module docstring).
    `profiles`: by device; `cores`: the CPUs this process may use; `probe`: called at most once
    per thread count, only for devices whose speed comes from their profile; `work`: what each
    device computes, by probe layer (`work_of`), which weighs the layers' ratios (equal
    weights without it)."""
    notes: list[str] = []
    probes: dict[int, Mapping[str, float]] = {}

    def probed(threads: int) -> Mapping[str, float]:
        if threads not in probes:
            probes[threads] = probe(threads)
        return probes[threads]

    slowdowns: dict[str, tuple[float, str]] = {}
    for d in scenario.devices:
        profile = profiles[d.name]
        implied, source, spread = _profile_slowdown(profile, d.speed, d.threads, probed,
                                                    (work or {}).get(d.name) or {})
        if d.cpu_share is not None:
            written = d.threads / d.cpu_share
            slowdowns[d.name] = (written, f"cpu_share {d.cpu_share:g}")
            off = implied / written
            if implied and not 1 / (1 + TOLERANCE) <= off <= 1 + TOLERANCE:
                notes.append(
                    f"warning: device {d.name}: cpu_share {d.cpu_share:g} emulates a device "
                    f"{written:.3g}x slower than this machine, but the simulator's {source} is "
                    f"{implied:.3g}x slower; remove cpu_share to emulate what the simulator "
                    "predicts")
            continue
        if implied < 1 / FASTER_ALLOWED:
            raise BackendError(
                f"devices.{d.name}: {source} is {1 / implied:.2f}x faster than this machine's "
                f"core; the emulator can only slow a device down (lower its speed, or give it "
                "a profile of a slower device)")
        if implied < 1:
            notes.append(f"note: device {d.name}: {source} is {1 / implied:.2f}x faster than "
                         "this machine's core (within its drift); emulated at this machine's speed")
        if spread > 1 + TOLERANCE:
            notes.append(
                f"note: device {d.name}: {source} is not this machine scaled by one factor (its "
                f"probe layers are {spread:.2f}x apart in slowdown); the emulator slows every "
                f"op by their weighted geometric mean, {max(implied, 1.0):.3g}x, so ops of some "
                "kinds will take longer or shorter than the simulator predicts")
        slowdowns[d.name] = (max(implied, 1.0), source)
    model, why = _choose_model(scenario, profiles, cores)
    if why:
        notes.append(why)
    devices = []
    for i, d in enumerate(scenario.devices):
        slowdown, source = slowdowns[d.name]
        share = d.cpu_share if d.cpu_share is not None else d.threads / slowdown
        if model == QUOTA and profiles[d.name].cpu_quota is not None and d.cpu_share is None:
            share = profiles[d.name].cpu_quota[0] * d.speed  # type: ignore[index]
            slowdown, source = d.threads / share, f"profile {profiles[d.name].name} x speed {d.speed:g}"
        devices.append(EmulatedDevice(d.name, slowdown, share,
                                      cores[i] if model == DILATE else None, source))
    period = scenario.backends.emu.cfs_period_us
    if model == QUOTA:
        smallest = min(dev.cpu_share for dev in devices)
        if smallest * period < MIN_QUOTA_US:
            period = min(1_000_000, math.ceil(MIN_QUOTA_US / smallest))
            notes.append(f"note: the CFS period is {period / 1000:g} ms (not "
                         f"{scenario.backends.emu.cfs_period_us / 1000:g}): a quota of "
                         f"{smallest:.3g} of a core needs it to reach the kernel's 1 ms minimum")
        notes.append(f"note: quota model: ops shorter than a few {period / 1000:g} ms CFS periods "
                     "run in steps of one period, not at a steady speed (emu/README.md)")
    return DevicePlan(model, tuple(devices), period, tuple(notes))


def _profile_slowdown(profile: Profile, speed: float, threads: int,
                      probed: Callable[[int], Mapping[str, float]], weights: Mapping[str, float],
                      ) -> tuple[float, str, float]:
    """(slowdown, what it rests on, max/min over the probe layers) of a device with this
    profile and speed relative to this machine now; a profile measured under a quota is that
    share of this machine's core. The layers' ratios are averaged (geometrically) with
    `weights`, equal where none is given."""
    source = f"profile {profile.name} x speed {speed:g}"
    quota = profile.cpu_quota
    if quota is not None:
        return threads / (quota[0] * speed), source, 1.0
    recorded = profile.provenance.get("probe")
    same_threads = int(profile.provenance.get("threads") or 1) == threads
    if (isinstance(recorded, Mapping) and profile.provenance.get("kind") == "measured"
            and same_threads):
        device = {str(k): float(v) for k, v in recorded.items()}
    else:
        device = predicted_probe(profile)
    now = probed(threads)
    ratios = {k: device[k] / (speed * now[k]) for k in device if k in now and now[k] > 0}
    if not ratios:
        raise BackendError(f"profile {profile.name}: no probe layer to compare with this machine")
    weight = {k: weights.get(k, 0.0) for k in ratios}
    if sum(weight.values()) <= 0:
        weight = dict.fromkeys(ratios, 1.0)
    total = sum(weight.values())
    mean = math.exp(sum(w * math.log(ratios[k]) for k, w in weight.items()) / total)
    if weights:
        source += " on its work"
    return mean, source, max(ratios.values()) / min(ratios.values())


def probe_layer_of(layer: LayerSpec) -> str | None:
    """The probe layer (`halp.latency.probe.LAYERS`) whose speed stands for `layer`'s: what
    the emulator weighs by how much of a device's work each kind is; None for the rest (pooling,
    elementwise ops, merges), which weigh nothing."""
    if layer.kind == DWCONV:
        return "dwconv3x3"
    if layer.kind == CONV:
        return "conv1x1" if layer.kernel == (1, 1) else "conv3x3"
    if layer.kind == LINEAR:
        return "linear"
    return None


def work_of(served: Iterable[tuple[Plan, ModelGraph]], profiles: Mapping[str, Profile],
            ) -> dict[str, dict[str, float]]:
    """Per device, the predicted seconds of its Compute ops in `served` (plans with their
    graphs) by the probe layer that stands for them: the layers whose drift matters for it.
    VGG-16 is 3x3 convolutions and its classifier, MobileNet-V1 1x1 and depthwise ones; on
    2026-12-06 this machine's 3x3 convolution had drifted by 1.11x since profiling and its
    linear layer by 1.47x, and VGG-16 by ~1.1x: equal weights dilated it 14% too little."""
    work: dict[str, dict[str, float]] = {}
    for plan, graph in served:
        for op in plan.ops:
            if not isinstance(op, Compute) or op.device not in profiles:
                continue
            profile = profiles[op.device]
            mine = work.setdefault(op.device, {})
            for layer, held, out in graph.layer_regions(op.start, op.stop, op.out):
                name = probe_layer_of(layer)
                if name is not None:
                    mine[name] = mine.get(name, 0.0) + profile.layer_s(layer, held, out)
    return work


def _choose_model(scenario: Scenario, profiles: Mapping[str, Profile],
                  cores: list[int]) -> tuple[CpuModel, str]:
    """The CPU model, and a line saying why when dilation was wanted but cannot be had."""
    asked = scenario.backends.emu.cpu_model
    if asked == "quota":
        return QUOTA, ""
    reasons = []
    if len(scenario.devices) > len(cores):
        reasons.append(f"{len(scenario.devices)} devices need a core each and this machine "
                       f"gives {len(cores)}")
    multi = [d.name for d in scenario.devices if d.threads > 1]
    if multi:
        reasons.append(f"{', '.join(multi)} compute with more than one thread")
    quota = [d.name for d in scenario.devices if profiles[d.name].cpu_quota is not None]
    if quota:
        reasons.append(f"the profiles of {', '.join(quota)} were measured under a CPU quota")
    if not reasons:
        return DILATE, ""
    why = "; ".join(reasons)
    if asked == DILATE:
        raise BackendError(f"backends.emu.cpu_model: dilate needs a core per one-thread device: {why}")
    return QUOTA, f"note: quota model, not dilation: {why}"
