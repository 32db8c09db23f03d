"""A device slower than the machine it runs on, by time dilation: compute at full speed on a
core of its own, then hold the result back until the op has taken its CPU time times the
device's slowdown.

Why not a CPU quota: the kernel enforces a quota in whole periods at its 4 ms tick, so an op
of a few milliseconds takes one, two or three periods depending on where it starts, and every
hand-over between a device's threads can lose one (emu/README.md, *What a CPU quota does*).
Dilation keeps the op itself at full speed, measures what it cost (the compute thread's CPU
time, which a neighbour's load barely moves on a core of its own), and only then waits: a
device is slow all the time and steadily, as a Raspberry Pi is, and its I/O threads are never
held; the compute thread even yields its core to them at once (`_yield_to_io`). It needs a
core per device: devices bursting at full speed on shared cores inflate each other's CPU
time, and dilation multiplies that too.

The emulator sets `HALP_DILATION=<slowdown>@<core>` in a device's environment; every compute
op of that process (`halp.runtime.device.run_compute_ops`) then runs pinned to that core and
is released `slowdown` x its CPU time after it started. Its CPU time is taken warm: on this
VM an op that follows a wait (the device's own holds, or the gap between requests) used 25-45%
more CPU than the same op run again at once (MobileNet-V1's stages on 2026-12-06: 27.5-30.0
ms against 20.0-20.9 ms per inference, the profile predicting 17.4 with the machine 1.1-1.3x
slower than when profiled), because the physical machine's other tenants empty the caches
meanwhile; spinning instead of sleeping did not help. A Raspberry Pi has no such neighbours,
and dilation would multiply that refill by the slowdown. So where the hold has room for it,
the op runs two or three times and the least CPU time counts (`Dilation.run`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from halp.errors import BackendError

DILATION_ENV = "HALP_DILATION"
MAX_SLOWDOWN = 10_000.0
# From this slowdown on, an op runs a second time. A first (cold) run c1 and a warm one c2 <= c1
# end at c1 + c2, late by c1 + c2 - slowdown x c2 <= c1 - c2 at 2x, where counting the cold run
# would be late by slowdown x (c1 - c2) >= 2 (c1 - c2): from 2x the second run is never the
# worse. (At 3x, devices emulated 2.4-3x slower than this VM counted cold runs, and MobileNet-V1
# measured 15-33% long on 2026-12-06.)
WARM_FROM = 2.0
# At most this many runs of an op: a third one only where it ends before the hold would (time
# so far + its CPU time <= slowdown x its CPU time). The least of three is what the profiler's
# minimum converges to: in six validations of MobileNet-V1 alternated side by side on
# 2026-12-07, stand-alone and HALP runs measured 2.1-6.9% off (mean 4.0%) with three, and
# 2.3-9.3% (mean 6.8%) with two; the runs' biases spread 11 points with two, 13 with three.
MAX_RUNS = 3
T = TypeVar("T")


@dataclass(frozen=True)
class Dilation:
    slowdown: float  # how many times longer an op takes than its CPU time on this machine
    core: int  # the CPU the device's compute runs on, alone

    def __post_init__(self) -> None:
        if not 1.0 <= self.slowdown <= MAX_SLOWDOWN:
            raise BackendError(f"{DILATION_ENV}: a slowdown from 1 to {MAX_SLOWDOWN:g}, "
                               f"not {self.slowdown:g}")
        if self.core < 0:
            raise BackendError(f"{DILATION_ENV}: a core number, not {self.core}")

    def to_env(self) -> str:
        return f"{self.slowdown:.6g}@{self.core}"

    def pin(self) -> None:
        """Run the calling thread on the device's core only, its sleeps ending on time, and
        yielding that core at once to any other thread that wakes there."""
        if os.sched_getaffinity(0) != {self.core}:  # 0: the calling thread
            try:
                os.sched_setaffinity(0, {self.core})
            except OSError as exc:
                raise BackendError(f"cannot run compute on core {self.core}: "
                                   f"{exc.strerror}") from None
            _tight_timer()
        if os.sched_getscheduler(0) != os.SCHED_IDLE:
            _yield_to_io()

    def run(self, op: Callable[[], T], started: float) -> T:
        """Run `op` (a compute op that started at `started`, perf_counter seconds) as the
        device would: on this machine, then held until its CPU time x the slowdown. Where the
        hold leaves room (`WARM_FROM`, `MAX_RUNS`), the op runs again and the least CPU time
        counts: the first run after the device waited pays for caches that other tenants of
        the physical machine emptied meanwhile, which the emulated device does not, and any
        run may be charged the kernel's packet work that interrupted it (see emu/README.md)."""
        c0 = time.thread_time()
        result = op()
        cpu_s = time.thread_time() - c0
        runs = 1
        while runs < MAX_RUNS and (self.slowdown >= WARM_FROM if runs == 1 else
                                   time.perf_counter() - started + cpu_s <= self.slowdown * cpu_s):
            c1 = time.thread_time()
            op()  # measured only; its result is the first run's
            cpu_s = min(cpu_s, time.thread_time() - c1)
            runs += 1
        self.hold(started, cpu_s)
        return result

    def hold(self, started: float, cpu_s: float) -> None:
        """Wait until `slowdown` x `cpu_s` after `started` (perf_counter seconds)."""
        left = started + cpu_s * self.slowdown - time.perf_counter()
        if left > 0:
            time.sleep(left)


PR_SET_TIMERSLACK = 29  # linux/prctl.h
TIMER_SLACK_NS = 1000


def _tight_timer() -> None:
    """Let the calling thread's sleeps end within a microsecond of when asked, not the
    kernel's default 50 us late: a dilated op of 1 ms would otherwise come out 5% long."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, TIMER_SLACK_NS, 0, 0, 0)


def _yield_to_io() -> None:
    """Make the calling (compute) thread SCHED_IDLE: a thread that wakes on its core, such as
    the device's I/O threads (which run anywhere), preempts it at once. As a normal thread it
    made a woken I/O thread wait up to the scheduler's wake-up granularity: on 2026-12-07 a
    host's first send of each MobileNet-V1 request (142 kB, 12.7 ms on the wire) took 15-17 ms
    in 4 to 6 requests of 10 while the host computed, and 12.6-13.0 ms in all ten as
    SCHED_IDLE. The op loses nothing by it: its hold counts its CPU time, not its wall time.
    Best effort (a kernel without SCHED_IDLE leaves the thread as it was)."""
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def parse(text: str) -> Dilation:
    slowdown, sep, core = text.partition("@")
    try:
        if not sep:
            raise ValueError
        return Dilation(float(slowdown), int(core))
    except ValueError:
        raise BackendError(f"{DILATION_ENV}={text!r}: expected <slowdown>@<core>, "
                           "like 4.0@1") from None


def from_environment() -> Dilation | None:
    """The dilation the emulator gave this process, if any."""
    text = os.environ.get(DILATION_ENV)
    return parse(text) if text else None

