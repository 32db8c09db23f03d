"""Links and their bandwidth over time: constant, or a piecewise-constant trace.

A transfer across a change of rate takes exactly the integrated time: the bits sent before
the change at the old rate, the rest at the new one.
"""

from __future__ import annotations

import bisect
import csv
from dataclasses import dataclass
from pathlib import Path

from halp.errors import HalpError


@dataclass(frozen=True)
class BandwidthTrace:
    """Rate `values[i]` (bits per second) from `times[i]` until `times[i+1]`; the last holds
    forever; before `times[0]` the first value holds."""

    times: tuple[float, ...]
    values: tuple[float, ...]

    @classmethod
    def constant(cls, bps: float) -> BandwidthTrace:
        return cls((0.0,), (float(bps),))

    def __post_init__(self) -> None:
        if not self.times or len(self.times) != len(self.values):
            raise HalpError("a bandwidth trace needs as many times as values, at least one")
        if any(b <= a for a, b in zip(self.times, self.times[1:], strict=False)):
            raise HalpError("bandwidth trace times must increase strictly")
        if any(v <= 0 for v in self.values):
            raise HalpError("bandwidth trace values must be positive")

    @property
    def is_constant(self) -> bool:
        return len(set(self.values)) == 1

    def rate_at(self, t: float) -> float:
        i = bisect.bisect_right(self.times, t) - 1
        return self.values[max(0, i)]

    def finish_time(self, start: float, bits: float) -> float:
        """When `bits` sent from `start` have all gone through."""
        if bits <= 0:
            return start
        i = max(0, bisect.bisect_right(self.times, start) - 1)
        t, left = start, float(bits)
        while True:
            rate = self.values[i]
            end = self.times[i + 1] if i + 1 < len(self.times) else float("inf")
            capacity = (end - t) * rate
            if capacity >= left:
                return t + left / rate
            left -= capacity
            t, i = end, i + 1



def read_trace(path: Path) -> BandwidthTrace:
    """Read a CSV with a `time_s,bandwidth_bps` header."""
    if not path.is_file():
        raise HalpError(f"bandwidth trace {path} does not exist")
    times: list[float] = []
    values: list[float] = []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or set(reader.fieldnames) < {"time_s", "bandwidth_bps"}:
            raise HalpError(f"{path}: needs a header 'time_s,bandwidth_bps'")
        for line, row in enumerate(reader, start=2):
            try:
                times.append(float(row["time_s"]))
                values.append(float(row["bandwidth_bps"]))
            except (TypeError, ValueError):
                raise HalpError(f"{path}:{line}: cannot read {row} as numbers") from None
    try:
        return BandwidthTrace(tuple(times), tuple(values))
    except HalpError as exc:
        raise HalpError(f"{path}: {exc}") from None
