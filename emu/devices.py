"""How the emulator makes each device as fast as the simulator says it is (pure: the machine's
timings and core list come in as arguments).

A device's speed in the simulator is its profile's times divided by `speed`. The emulator runs
the device on this machine, so it needs that speed *relative to this machine*: its
**slowdown**, how many times longer an op takes on the device than on one of this machine's
cores. It is measured on the device's own work: the compute ops the served plans give it
(`ops_of`: the distinct ones, heaviest first, up to most of its predicted time) are timed here
just before the run, and the slowdown is their predicted time on the device (profile / speed)
over their time here, each op counted as often as the plans compute it. Devices of one kind
(profile, speed, threads) pool their ops: one kind of device, one speed, whichever slices each
runs. So a device keeps the speed the simulator gives it for the ops it runs, however this
machine drifted since profiling and whichever layer kinds it drifted in (on 2026-12-06 small
probe convolutions had slowed 1.25x in two hours, VGG-16's large ones 1.07x: a probe of fixed
layers left stand-alone VGG-16 14% fast). One factor per kind of device, not one per op: the
device is this machine uniformly slowed, and each op keeps its own share of the error of the
profile's latency model. Without plans (a `check` before anything is planned) or for a kind of
device that computes nothing, four fixed probe layers stand in (`halp.latency.probe`: the
profile's own probe when it holds one measured with the same threads, else its prediction of
them; geometric mean). A written `cpu_share`
overrides it (slowdown = threads / cpu_share), and when the profile says otherwise by more
than `TOLERANCE` the emulator says so.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from halp.errors import BackendError
from halp.latency.probe import predicted_probe
from halp.latency.profile import Profile
from halp.model.graph import CONV, DWCONV, LINEAR, LayerSpec, ModelGraph, Region
from halp.plan import Compute, Plan
from halp.scenario import DeviceConfig, Scenario

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
# Which of a device's ops are timed before a run: the heaviest, until they cover this share of
# its predicted compute, at most `MOST_OPS` of them (MoDNN gives a device hundreds of slivers).
COVER = 0.9
MOST_OPS = 40
# A layer kind below this share of a device's timed work does not count towards its spread.
KIND_SHARE = 0.1

# threads -> seconds per probe layer on this machine now (halp.latency.probe.probe_machine)
Probe = Callable[[int], Mapping[str, float]]


@dataclass(frozen=True)
class DeviceOp:
    """One distinct compute op a device's served plans run: stages [start, stop) of `graph`
    producing `out`; `predicted_s` on its profile at speed 1 (op overhead included), run
    `count` times by the plans; `kind`, the probe layer of its heaviest layer (what its time
    mostly is, for the spread)."""

    graph: ModelGraph
    start: int
    stop: int
    out: Region
    predicted_s: float
    count: int
    kind: str


@dataclass(frozen=True)
class Work:
    """A device's ops timed here now: per kind, (seconds its profile predicts at speed 1,
    seconds they took here), each op counted as often as the plans run it."""

    by_kind: Mapping[str, tuple[float, float]]

    @property
    def predicted_s(self) -> float:
        return sum(p for p, _ in self.by_kind.values())

    @property
    def here_s(self) -> float:
        return sum(h for _, h in self.by_kind.values())

    def spread(self) -> float:
        """How far apart the kinds that make up the work are in slowdown (max / min), over
        kinds of at least `KIND_SHARE` of the predicted time."""
        total = self.predicted_s
        ratios = [p / h for p, h in self.by_kind.values() if h > 0 and p >= KIND_SHARE * total]
        return max(ratios) / min(ratios) if ratios else 1.0


def summed(parts: Iterable[tuple[str, float, float]]) -> Work:
    """The `Work` of (kind, predicted seconds, seconds here) parts, added up by kind."""
    by_kind: dict[str, tuple[float, float]] = {}
    for kind, predicted, here in parts:
        p, h = by_kind.get(kind, (0.0, 0.0))
        by_kind[kind] = (p + predicted, h + here)
    return Work(by_kind)


def timed_work(ops: Sequence[DeviceOp], seconds: Sequence[float]) -> Work:
    """The `Work` of ops timed here at `seconds` each (one call)."""
    return summed((op.kind, op.count * op.predicted_s, op.count * here)
                  for op, here in zip(ops, seconds, strict=True))


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
                 probe: Probe, work: Mapping[str, Work] | None = None) -> DevicePlan:
    """Each device's slowdown and the CPU model that holds it (see the module docstring).
    `profiles`: by device; `cores`: the CPUs this process may use; `work`: each device's own
    ops timed here (`ops_of`, `timed_work`); `probe`: the fixed probe layers, called at most
    once per thread count, only for devices whose speed comes from their profile and that have
    no work timed."""
    notes: list[str] = []
    probes: dict[int, Mapping[str, float]] = {}

    def probed(threads: int) -> Mapping[str, float]:
        if threads not in probes:
            probes[threads] = probe(threads)
        return probes[threads]

    slowdowns: dict[str, tuple[float, str]] = {}
    pooled = _pooled(scenario, profiles, work or {})
    for d in scenario.devices:
        profile = profiles[d.name]
        implied, source, spread = _profile_slowdown(profile, d.speed, d.threads, probed,
                                                    pooled.get(d.name))
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
        idle = work is not None and d.name not in pooled  # nothing of its kind computes
        if spread > 1 + TOLERANCE and not idle:
            notes.append(
                f"note: device {d.name}: {source} is not this machine scaled by one factor (its "
                f"layer kinds are {spread:.2f}x apart in slowdown); the emulator slows every "
                f"op by {max(implied, 1.0):.3g}x, their mean over its work, so ops of some "
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


def _pooled(scenario: Scenario, profiles: Mapping[str, Profile], work: Mapping[str, Work],
            ) -> dict[str, Work]:
    """Each device's work pooled with that of every device of its kind (same profile, speed
    and threads): one kind of device, one speed, whichever slices of the model each runs."""
    def kind(d: DeviceConfig) -> tuple[str, float, int]:
        return (profiles[d.name].name, d.speed, d.threads)

    members: dict[tuple[str, float, int], list[Work]] = {}
    for d in scenario.devices:
        if d.name in work:
            members.setdefault(kind(d), []).append(work[d.name])
    pools = {k: summed((name, p, h) for w in ws for name, (p, h) in w.by_kind.items())
             for k, ws in members.items()}
    return {d.name: pools[kind(d)] for d in scenario.devices if kind(d) in pools}


def _profile_slowdown(profile: Profile, speed: float, threads: int,
                      probed: Callable[[int], Mapping[str, float]], work: Work | None,
                      ) -> tuple[float, str, float]:
    """(slowdown, what it rests on, max/min over layer kinds) of a device with this profile and
    speed relative to this machine now: its work's predicted time over its time here; without
    work, the probe layers' ratios averaged geometrically. A profile measured under a quota is
    that share of this machine's core."""
    source = f"profile {profile.name} x speed {speed:g}"
    quota = profile.cpu_quota
    if quota is not None:
        return threads / (quota[0] * speed), source, 1.0
    if work is not None and work.here_s > 0 and work.predicted_s > 0:
        return (work.predicted_s / (speed * work.here_s),
                f"{source} on its ops ({1e3 * work.here_s:.3g} ms timed here)", work.spread())
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
    mean = math.exp(sum(math.log(r) for r in ratios.values()) / len(ratios))
    return mean, source, max(ratios.values()) / min(ratios.values())


def probe_layer_of(layer: LayerSpec) -> str:
    """The probe layer (`halp.latency.probe.LAYERS`) whose kind `layer` is, or its own kind for
    the rest (pooling, elementwise ops, merges): how a device's work is told apart by kind."""
    if layer.kind == DWCONV:
        return "dwconv3x3"
    if layer.kind == CONV:
        return "conv1x1" if layer.kernel == (1, 1) else "conv3x3"
    if layer.kind == LINEAR:
        return "linear"
    return layer.kind


def ops_of(served: Iterable[tuple[Plan, ModelGraph]], profiles: Mapping[str, Profile],
           cover: float = COVER, most: int = MOST_OPS) -> dict[str, list[DeviceOp]]:
    """Per device, the distinct Compute ops of `served` (plans with their graphs) worth timing
    before a run: heaviest first (predicted time x how often the plans run it) until they cover
    `cover` of the device's predicted compute, at most `most`. Each plan counts once."""
    found: dict[str, dict[tuple[int, int, int, Region], DeviceOp]] = {}
    for plan, graph in served:
        for op in plan.ops:
            if not isinstance(op, Compute) or op.device not in profiles or op.out.empty:
                continue
            mine = found.setdefault(op.device, {})
            key = (id(graph), op.start, op.stop, op.out)
            if key in mine:
                mine[key] = replace(mine[key], count=mine[key].count + 1)
                continue
            profile = profiles[op.device]
            layers = [(profile.layer_s(layer, held, out), probe_layer_of(layer))
                      for layer, held, out in graph.layer_regions(op.start, op.stop, op.out)]
            predicted = profile.op_overhead_s + sum(t for t, _ in layers)
            kind = max(layers)[1] if layers else "other"
            mine[key] = DeviceOp(graph, op.start, op.stop, op.out, predicted, 1, kind)
    chosen: dict[str, list[DeviceOp]] = {}
    for device, mine in found.items():
        heaviest = sorted(mine.values(), key=lambda o: o.count * o.predicted_s, reverse=True)
        total = sum(o.count * o.predicted_s for o in heaviest)
        kept: list[DeviceOp] = []
        for timed in heaviest[:most]:
            kept.append(timed)
            if sum(o.count * o.predicted_s for o in kept) >= cover * total:
                break
        chosen[device] = kept
    return chosen


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
