"""Timing ops on this machine, and the clock and allocator every timing here shares.

Every op of `halp.latency.ops` gets a warm-up call, then timed calls (`time.perf_counter`) in
shuffled round-robin passes over all ops of one model, so that a burst of load from another
process spreads over many ops instead of ruining one, and so that an op's predecessor (what is
in the caches) varies as it does in a real plan.

A call counts only if this thread kept its core throughout (wall time close to the thread's
CPU time); an op is timed until it has `repeats` such clean calls. Its time is the *minimum*
of them by default, as `timeit` advises: on a shared machine the other processes only ever add
time, and on this 2-vCPU VM the median of the same ops drifted by up to 19% between runs a
minute apart while the minimum drifted by under 8%. `statistic="median"` keeps the median.
Under a CPU quota (`--emu-cpu-share`) a call is timed by this thread's CPU time over the
share instead, and every call counts (see `time_ops`).

A small extra measurement completes a profile: `copy_s_per_byte` from `torch.cat` of row
blocks (the gather); what a message costs beyond its bits on the wire is measured along the
runtime's own path (`halp.latency.hop`). `BackgroundLoad` says how busy other processes kept
the machine meanwhile.

Why its own module: the machine probe (`halp.latency.probe`) and the runtime's workers time
and allocate as the profiler does (`call_seconds`, `steady_allocator`), so these must not sit
with the profiler, which imports the probe.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from halp.errors import HalpError
from halp.latency.fit import nnls
from halp.latency.ops import DEFAULT_HEIGHTS, SEGMENT_KINDS, OpSpec, Sample, graph_of, plan_ops
from halp.model.graph import ModelGraph, Region
from halp.model.zoo import ModelSpec

# "mean" counts every call, clean or not. Under a CPU quota (the emulator's CFS-limited hosts,
# `halp profile --emu-cpu-share`) calls are timed by CPU time, and the mean is an op's expected
# CPU (what a pause costs it depends on how many pauses fall in it).
STATISTICS: dict[str, Callable[[Sequence[float]], float]] = {
    "min": min, "median": statistics.median, "mean": statistics.fmean}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def steady_allocator() -> bool:
    """Keep freed memory in the process (glibc): no trimming of the heap, and mmap only for
    blocks above 32 MiB. Otherwise every large tensor is a fresh mmap whose pages fault in on
    first touch, which made VGG-16's first convolutions ~40% slower here, and by an amount that
    depends on what ran before. Workers should call this at start-up too, so that what they
    execute matches what was profiled. Returns False where it does not apply (not glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return (bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
                and bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)))
    except (OSError, AttributeError):
        return False


def input_dims(shape: tuple[int, ...], held: Region) -> tuple[int, ...]:
    """The batch-of-one tensor shape of an op's input: the rows and columns of a (C, H, W) map
    it holds, or a flat input whole."""
    return (1, shape[0], held.rows.size, held.cols.size) if len(shape) == 3 else (1, *shape)


def call_seconds(wall_s: float, cpu_s: float, cpu_share: float) -> float:
    """One timed call's time: its wall time, or under a CPU quota its CPU time over the share
    (see `time_ops`)."""
    return cpu_s / cpu_share if cpu_share < 1.0 else wall_s


def time_ops(ops: Sequence[OpSpec], repeats: int, threads: int = 1, statistic: str = "min",
             progress: Callable[[str], None] | None = None, cpu_share: float = 1.0) -> list[Sample]:
    """Time every op: a warm-up, then `repeats` clean calls each, in shuffled round-robin
    passes; the `statistic` (min, median or mean) of the clean calls is the op's time.

    A call is clean when its wall-clock time (`perf_counter`) is within 5% + 20 us of the
    CPU time of this thread: otherwise the thread was descheduled (another process took the
    core) and the call is timed again in a later pass, up to 3 x `repeats` passes. With more
    than one thread the CPU time of the calling thread says nothing, and every call counts.

    Under a CPU quota (`cpu_share` < 1, one thread) a call's time is the thread's CPU time
    divided by the share: the time the op takes with ops back to back, when the quota lets the
    device run `cpu_share` of every period. The wall time of one call says more about where
    the quota's period was than about the op (a 2 ms op takes 2 ms or 9.5 ms at a quarter of a
    10 ms period), while its CPU time is steady and includes what being throttled costs the op
    (caches and TLB refilled after each pause: about +20% on MobileNet-V1 at a quarter core)."""
    if repeats < 1:
        raise HalpError(f"repeats must be at least 1, got {repeats}")
    if statistic not in STATISTICS:
        raise HalpError(f"statistic {statistic!r}: use one of {', '.join(STATISTICS)}")
    summarise = STATISTICS[statistic]
    by_cpu = cpu_share < 1.0
    if by_cpu and threads != 1:
        raise HalpError(f"under a CPU quota ops are timed by one thread's CPU time: "
                        f"use --threads 1, not {threads}")
    steady_allocator()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    inputs: dict[tuple[int, ...], torch.Tensor] = {}
    generator = torch.Generator().manual_seed(0)
    prepared: list[tuple[OpSpec, tuple[torch.Tensor, ...], Callable[[Sequence[torch.Tensor]], torch.Tensor]]] = []
    for op in ops:
        tensors: list[torch.Tensor] = []
        # One tensor per shape and input position: a merge reads two maps, not one twice.
        for position, (shape, held) in enumerate(op.inputs()):
            dims = input_dims(shape, held)
            key = (position, *dims)
            if key not in inputs:
                inputs[key] = torch.randn(dims, generator=generator)
            tensors.append(inputs[key])
        prepared.append((op, tuple(tensors), op.runner()))
    clean: list[list[float]] = [[] for _ in ops]
    every: list[list[float]] = [[] for _ in ops]
    shuffler = random.Random(len(prepared))
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with torch.inference_mode():
            for _, xs, run in prepared:  # warm-up
                run(xs)
            for r in range(3 * repeats):
                todo = [i for i in range(len(prepared)) if len(clean[i]) < repeats]
                if not todo:
                    break
                if progress:
                    progress(f"pass {r + 1} over {len(todo)} ops")
                shuffler.shuffle(todo)
                for i in todo:
                    op, xs, run = prepared[i]
                    for x in xs:  # the input was just produced or received: warm it
                        x.mul_(1.0)
                    t0, c0 = time.perf_counter(), time.thread_time()
                    run(xs)
                    c1, t1 = time.thread_time(), time.perf_counter()
                    seconds = call_seconds(t1 - t0, c1 - c0, cpu_share)
                    every[i].append(seconds)
                    if (by_cpu or threads > 1 or statistic == "mean"
                            or seconds - (c1 - c0) <= 0.05 * seconds + 20e-6):
                        clean[i].append(seconds)
                gc.collect()
    finally:
        if was_enabled:
            gc.enable()
        torch.set_num_threads(previous)
    samples = []
    for (op, _, _), good, ts in zip(prepared, clean, every, strict=True):
        kinds = op.kinds()
        samples.append(Sample(
            model=op.graph.name, start=op.start, stop=op.stop,
            rows=(op.out.rows.start, op.out.rows.stop), height=op.height, kinds=kinds,
            segments=sum(1 for kind in kinds if kind in SEGMENT_KINDS), terms=op.terms(),
            seconds=summarise(good) if good else min(ts),
            calls=len(ts), clean=len(good), clean_s=tuple(good), node=op.node,
        ))
    return samples


def measure_graphs(graphs: Sequence[ModelGraph], heights: Sequence[float] = DEFAULT_HEIGHTS,
                   repeats: int = 5, threads: int = 1, max_run: int = 4, seed: int = 0,
                   singles: bool = True, runs: bool = True, statistic: str = "min",
                   progress: Callable[[str], None] | None = None,
                   cpu_share: float = 1.0) -> list[Sample]:
    """Time the ops of `plan_ops` on each graph in turn (see `time_ops`)."""
    rng = random.Random(seed)
    samples: list[Sample] = []
    for graph in graphs:  # one model at a time, as a device runs one model's ops
        ops = plan_ops(graph, heights, max_run, rng, singles=singles, runs=runs)
        if progress:
            progress(f"{graph.name}: {len(ops)} ops")
        samples += time_ops(ops, repeats, threads, statistic, cpu_share=cpu_share)
    return samples


def measure(models: Sequence[ModelSpec], heights: Sequence[float] = DEFAULT_HEIGHTS,
            repeats: int = 5, threads: int = 1, max_run: int = 4, seed: int = 0,
            statistic: str = "min", progress: Callable[[str], None] | None = None,
            cpu_share: float = 1.0) -> list[Sample]:
    """Time single layers and fused runs of `models` on row slices of `heights` (fractions
    of each map's height)."""
    return measure_graphs([graph_of(m) for m in models], heights, repeats, threads, max_run,
                          seed, statistic=statistic, progress=progress, cpu_share=cpu_share)


# ---- the extras: gather and messages ------------------------------------------------------
def measure_copy_s_per_byte(threads: int = 1, repeats: int = 15, cpu_share: float = 1.0) -> float:
    """Seconds per byte of stitching row blocks together with `torch.cat` (the gather): the
    fastest of `repeats` calls per size, like the compute ops, fitted through the origin (under
    a quota, CPU time / `cpu_share`, as `time_ops`)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    sizes, seconds = [], []
    try:
        for channels, height, width in ((64, 56, 56), (128, 56, 56), (256, 28, 28), (64, 112, 112),
                                        (512, 14, 14), (32, 112, 112)):
            for blocks in (2, 4):
                parts = list(torch.randn(1, channels, height, width).chunk(blocks, dim=2))
                torch.cat(parts, dim=2)
                ts = []
                for _ in range(repeats):
                    t0, c0 = time.perf_counter(), time.thread_time()
                    torch.cat(parts, dim=2)
                    c1, t1 = time.thread_time(), time.perf_counter()
                    ts.append(call_seconds(t1 - t0, c1 - c0, cpu_share))
                sizes.append(channels * height * width * 4)
                seconds.append(min(ts))
    finally:
        torch.set_num_threads(previous)
    y = np.array(seconds)
    return float(nnls((np.array(sizes, dtype=float) / y)[:, None], np.ones_like(y))[0])


# ---- the conditions of a measurement ------------------------------------------------------
class BackgroundLoad:
    """How busy the other processes kept this machine's CPUs while the block ran: their CPU
    time over (wall time x CPUs), from /proc/stat minus this process's own CPU time. A figure
    of trust for a measurement: above ~0.1, caches and memory bandwidth were shared."""

    share: float | None = None

    def __enter__(self) -> BackgroundLoad:
        self._start = (_busy_cpu_s(), time.process_time(), time.perf_counter())
        return self

    def __exit__(self, *exc: object) -> None:
        busy0, own0, wall0 = self._start
        busy1, own1, wall1 = _busy_cpu_s(), time.process_time(), time.perf_counter()
        if busy0 is None or busy1 is None or wall1 <= wall0:
            return
        other = (busy1 - busy0) - (own1 - own0)
        self.share = round(max(0.0, other / ((wall1 - wall0) * (os.cpu_count() or 1))), 3)


def _busy_cpu_s() -> float | None:
    """CPU seconds spent busy by all processes since boot (Linux), or None elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


X86 = ("x86_64", "amd64", "i386", "i686")


def emulation() -> str | None:
    """How this process's CPU is emulated, or None when it runs natively. Under qemu-user
    (binfmt_misc) the kernel's /proc/cpuinfo still describes the real CPU, so an arm64 Python
    reading an x86 vendor (or the reverse) runs translated, hundreds of times slower per op
    than on real hardware and with other relative costs: no timing reference."""
    machine = platform.machine().lower()
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    keys = {line.split(":", 1)[0].strip().lower() for line in info.splitlines() if ":" in line}
    x86_cpu = "vendor_id" in keys or "genuineintel" in info.lower() or "authenticamd" in info.lower()
    arm_cpu = "cpu implementer" in keys
    if machine not in X86 and x86_cpu:
        return f"qemu-user: {machine} code translated on an x86-64 CPU ({cpu_model()})"
    if machine in X86 and arm_cpu:
        return f"user-mode emulation: {machine} code translated on an Arm CPU"
    return None


def cpu_model() -> str:
    """The name of this machine's CPU, for a profile's provenance."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
