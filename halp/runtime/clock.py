"""Mapping a worker's clock onto the host's: ping/pong offsets, best of several rounds.

Every device stamps events with `time.perf_counter()`. The host sends a PING at host time t0;
the worker stamps tw when it arrives; the PONG is back at host time t1. If the two halves of
the round trip are equally long, the worker clock reads tw at host time (t0 + t1) / 2, so

    offset = (t0 + t1) / 2 - tw         host time = worker time + offset
    uncertainty = (t1 - t0) / 2         the error is at most half the round trip

Of the recent rounds the one with the shortest round trip wins (`ClockSync.estimate`); the
heartbeat pings keep adding rounds, so slow drift is followed. When host and worker run on the
same kernel (the emulator's network namespaces, or a test on one machine), `perf_counter` is the
very same CLOCK_MONOTONIC on both sides: `same_clock` sees that from the boot id and the offset
is exactly zero.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def clock_identity() -> dict[str, str]:
    """What identifies this process's `perf_counter`: its implementation and the kernel boot."""
    info = time.get_clock_info("perf_counter")
    try:
        boot = _BOOT_ID.read_text().strip()
    except OSError:
        boot = ""
    return {"implementation": info.implementation, "boot_id": boot}


def same_clock(a: dict[str, str], b: dict[str, str]) -> bool:
    return (bool(a.get("boot_id")) and a.get("boot_id") == b.get("boot_id")
            and a.get("implementation") == b.get("implementation")
            and "CLOCK_MONOTONIC" in a.get("implementation", ""))


@dataclass(frozen=True)
class Sample:
    at: float  # host time the pong arrived
    offset: float
    uncertainty: float


class ClockSync:
    """Offset samples of one worker's clock; `estimate()` is the tightest recent one."""

    def __init__(self, window: int = 32, shared: bool = False):
        self.samples: deque[Sample] = deque(maxlen=window)
        self.shared = shared
        self.count = 0

    def add(self, t0: float, tw: float, t1: float) -> Sample:
        sample = Sample(t1, (t0 + t1) / 2 - tw, max(0.0, (t1 - t0) / 2))
        self.samples.append(sample)
        self.count += 1
        return sample

    def measured(self) -> Sample | None:
        """The best measured sample, whatever `shared` says."""
        return min(self.samples, key=lambda s: s.uncertainty, default=None)

    def estimate(self) -> tuple[float, float]:
        """(offset, uncertainty) in seconds: host time = worker time + offset."""
        if self.shared:
            return 0.0, 0.0
        best = self.measured()
        if best is None:
            raise RuntimeError("no clock samples yet")
        return best.offset, best.uncertainty
