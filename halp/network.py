"""Links and their bandwidth over time: constant, or a piecewise-constant trace.

A transfer across a change of rate takes exactly the integrated time: the bits sent before
the change at the old rate, the rest at the new one.

A link's bandwidth is its rate on the wire, frames and headers included: what an Ethernet
port is specified at and what the emulator's HTB shapes. Blocks cross it as TCP payload, 1448
bytes in each 1514-byte frame (MTU 1500, TCP timestamps on, Linux's default), so a block of n
bytes puts `wire_bits(n)` bits on the link: payload moves at 95.6% of the bandwidth, which is
what iperf3 gets through the emulator's links (`bench/link_efficiency.py`).
"""

from __future__ import annotations

import bisect
import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from halp.errors import HalpError, shown
from halp.units import MAX_BANDWIDTH_BPS, MAX_QUANTITY_TEXT, MIN_BANDWIDTH_BPS, format_bps

TRACE_HEADER = "time_s,bandwidth_bps"
# A trace holds at most this many rate changes, read from a file or generated (halp.channel):
# a change a second for eleven days. More is a mistake, and the emulator plays every one.
MAX_TRACE_ROWS = 1_000_000
# A trace file's size: a million rows of two numbers fit in a fraction of it.
MAX_TRACE_BYTES = 64 * 2**20
# TCP payload per Ethernet frame: MTU 1500 - 20 (IP) - 32 (TCP with timestamps); the frame adds
# the 14-byte Ethernet header, which HTB counts (it sees the frame from the header on).
SEGMENT_PAYLOAD_BYTES = 1448
FRAME_BYTES = 1514


def wire_bits(payload_bytes: float) -> float:
    """The bits `payload_bytes` of TCP payload occupy on a link, frames included."""
    return payload_bytes * 8.0 * FRAME_BYTES / SEGMENT_PAYLOAD_BYTES


def line_rate_bps(payload_bps: float) -> float:
    """The bandwidth of a link that carries TCP payload at `payload_bps`: a measured payload
    rate as the bandwidth a scenario would give that link."""
    return wire_bits(payload_bps / 8.0)


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
        if not all(math.isfinite(x) for x in self.times + self.values):
            raise HalpError("bandwidth trace times and values must be finite numbers")
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
    """Read a CSV with the header `time_s,bandwidth_bps` and at least one row below it.

    Every row is two finite numbers: a time (seconds, from zero, strictly increasing) and a
    bandwidth from MIN_BANDWIDTH_BPS to MAX_BANDWIDTH_BPS. The file is at most MAX_TRACE_BYTES
    and MAX_TRACE_ROWS rows. Anything else is refused as `FILE line N: reason`."""
    if not path.is_file():
        raise HalpError(f"bandwidth trace {path} does not exist")
    size = path.stat().st_size
    if size > MAX_TRACE_BYTES:
        raise HalpError(f"{path}: {size} bytes is too large for a bandwidth trace (at most "
                        f"{MAX_TRACE_BYTES // 2**20} MB)")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise HalpError(f"{path} line {line}: not UTF-8 text") from None
    if not text.strip():
        raise HalpError(f"{path}: empty; a bandwidth trace needs the header '{TRACE_HEADER}' "
                        "and at least one row")
    times: list[float] = []
    values: list[float] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
        if [cell.strip() for cell in header] != TRACE_HEADER.split(","):
            raise _BadRow(f"the header must be '{TRACE_HEADER}', got {shown(','.join(header))}")
        for row in reader:
            if len(row) <= 1 and not "".join(row).strip():
                continue  # blank lines, such as one at the end, say nothing
            if len(times) == MAX_TRACE_ROWS:
                raise _BadRow(f"more than {MAX_TRACE_ROWS} rows")
            time_s, bps = _trace_row(row, times[-1] if times else None)
            times.append(time_s)
            values.append(bps)
    except _BadRow as exc:
        raise HalpError(f"{path} line {reader.line_num}: {exc}") from None
    except csv.Error as exc:
        raise HalpError(f"{path} line {reader.line_num}: not CSV ({exc})") from None
    if not times:
        raise HalpError(f"{path}: no rows after the header '{TRACE_HEADER}'")
    return BandwidthTrace(tuple(times), tuple(values))


class _BadRow(ValueError):
    """What is wrong with a line of a trace (the reader adds the file and the line)."""


def _trace_row(row: list[str], previous_s: float | None) -> tuple[float, float]:
    """A row's time and bandwidth, both finite, the time after `previous_s`, the bandwidth in
    range."""
    if len(row) != 2:
        raise _BadRow(f"{len(row)} columns; a row is '{TRACE_HEADER}'")
    numbers = []
    for name, cell in zip(TRACE_HEADER.split(","), row, strict=True):
        cell = cell.strip()
        if len(cell) > MAX_QUANTITY_TEXT:
            raise _BadRow(f"{name}: {len(cell)} characters is too long for a number")
        try:
            number = float(cell)
        except ValueError:
            raise _BadRow(f"{name}: cannot read {shown(cell)} as a number") from None
        if not math.isfinite(number):
            raise _BadRow(f"{name}: {shown(cell)} is not a finite number")
        numbers.append(number)
    time_s, bps = numbers
    if time_s < 0:
        raise _BadRow(f"time_s: {time_s:g} is negative")
    if previous_s is not None and time_s <= previous_s:
        raise _BadRow(f"time_s: {time_s:g} is not after {previous_s:g}; times must increase "
                      "strictly")
    if not MIN_BANDWIDTH_BPS <= bps <= MAX_BANDWIDTH_BPS:
        raise _BadRow(f"bandwidth_bps: {bps:g} is outside {format_bps(MIN_BANDWIDTH_BPS)}.."
                      f"{format_bps(MAX_BANDWIDTH_BPS)}")
    return time_s, bps
