"""The one place that parses units: bandwidths ("100Mbps"), durations ("250ms") and memory
sizes ("1GB": powers of 1000; "1GiB": powers of 1024).

Everything inside the testbed is in seconds, bits per second and bytes. A quantity parses to a
finite number or is refused: `1e400Mbps` is not an infinite bandwidth.
"""

import math
import re

from halp.errors import HalpError, shown

# The longest text read as a quantity. "100Mbps" is 7 characters; anything near this is a typo
# or hostile, and refusing it before the regular expression runs keeps parsing linear.
MAX_QUANTITY_TEXT = 64
# The bandwidths a scenario or a trace may hold: a bit per second up to a terabit per second.
MIN_BANDWIDTH_BPS = 1.0
MAX_BANDWIDTH_BPS = 1e12
# The memory a device may be given: a kilobyte up to a terabyte (a Pi has 1 to 8 GB).
MIN_MEMORY_BYTES = 1e3
MAX_MEMORY_BYTES = 1e12

_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"

_BANDWIDTH = {
    "bps": 1.0, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9,
    "bit/s": 1.0, "kbit/s": 1e3, "mbit/s": 1e6, "gbit/s": 1e9,
}
_DURATION = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}
_MEMORY = {"b": 1.0, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
           "kib": 2.0**10, "mib": 2.0**20, "gib": 2.0**30, "tib": 2.0**40}


def _parse(text: object, table: dict[str, float], what: str, example: str) -> float:
    if isinstance(text, bool):
        raise HalpError(f"expected a {what} like {example!r}, got {text!r}")
    if isinstance(text, int | float):
        raise HalpError(f"a {what} needs a unit, like {example!r}; got the bare number "
                        f"{shown(text)}")
    if not isinstance(text, str):
        raise HalpError(f"expected a {what} like {example!r}, got {shown(text)}")
    if len(text) > MAX_QUANTITY_TEXT:
        raise HalpError(f"a {what} of {len(text)} characters is too long (at most "
                        f"{MAX_QUANTITY_TEXT}); write it like {example!r}")
    match = re.fullmatch(_NUMBER + r"\s*([A-Za-z/]+)", text.strip())
    if not match:
        raise HalpError(f"cannot read {text!r} as a {what}; write it like {example!r}")
    value, unit = float(match.group(1)), match.group(2).lower()
    if unit not in table:
        units = ", ".join(sorted(table))
        raise HalpError(f"unknown {what} unit {match.group(2)!r} in {text!r}; use one of {units}")
    value *= table[unit]
    if not math.isfinite(value):
        raise HalpError(f"{what} {text!r} is not a finite number (too large)")
    return value


def bandwidth_bps(text: object) -> float:
    """Parse "100Mbps" into bits per second (must be positive; its range is the caller's)."""
    value = _parse(text, _BANDWIDTH, "bandwidth", "100Mbps")
    if value <= 0:
        raise HalpError(f"bandwidth must be positive, got {text!r}")
    return value


def duration_s(text: object) -> float:
    """Parse "250ms" into seconds (may be zero, never negative)."""
    value = _parse(text, _DURATION, "duration", "250ms")
    if value < 0:
        raise HalpError(f"duration must not be negative, got {text!r}")
    return value


def memory_bytes(text: object) -> float:
    """Parse "1GB" (1e9 bytes) or "1GiB" (2**30) into bytes (must be positive; its range is
    the caller's)."""
    value = _parse(text, _MEMORY, "memory size", "1GB")
    if value <= 0:
        raise HalpError(f"memory size must be positive, got {text!r}")
    return value


def format_bytes(n: float) -> str:
    """Bytes as a short size that parses back within 0.1%: "512MB", "1.5GB", "800B"."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.4g}{unit}"
    return f"{n:.4g}B"


def format_s(seconds: float) -> str:
    """Seconds as a duration that parses back: "1ms", "60s", "1000000s"."""
    if 0 < seconds < 1:
        return f"{seconds * 1e3:.12g}ms"
    return f"{seconds:.12g}s"


def format_bps(bps: float) -> str:
    for unit, scale in (("Gbps", 1e9), ("Mbps", 1e6), ("kbps", 1e3)):
        if bps >= scale:
            return f"{bps / scale:g}{unit}"
    return f"{bps:g}bps"
