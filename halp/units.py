"""The one place that parses units: bandwidths ("100Mbps") and durations ("250ms").

Everything inside the testbed is in seconds, bits per second and bytes.
"""

import re

from halp.errors import HalpError

_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"

_BANDWIDTH = {
    "bps": 1.0, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9,
    "bit/s": 1.0, "kbit/s": 1e3, "mbit/s": 1e6, "gbit/s": 1e9,
}
_DURATION = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}


def _parse(text: object, table: dict[str, float], what: str, example: str) -> float:
    if isinstance(text, bool):
        raise HalpError(f"expected a {what} like {example!r}, got {text!r}")
    if isinstance(text, int | float):
        raise HalpError(f"a {what} needs a unit, like {example!r}; got the bare number {text!r}")
    if not isinstance(text, str):
        raise HalpError(f"expected a {what} like {example!r}, got {text!r}")
    match = re.fullmatch(_NUMBER + r"\s*([A-Za-z/]+)", text.strip())
    if not match:
        raise HalpError(f"cannot read {text!r} as a {what}; write it like {example!r}")
    value, unit = float(match.group(1)), match.group(2).lower()
    if unit not in table:
        units = ", ".join(sorted(table))
        raise HalpError(f"unknown {what} unit {match.group(2)!r} in {text!r}; use one of {units}")
    return value * table[unit]


def bandwidth_bps(text: object) -> float:
    """Parse "100Mbps" into bits per second (must be positive)."""
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


def format_bps(bps: float) -> str:
    for unit, scale in (("Gbps", 1e9), ("Mbps", 1e6), ("kbps", 1e3)):
        if bps >= scale:
            return f"{bps / scale:g}{unit}"
    return f"{bps:g}bps"
