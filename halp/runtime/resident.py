"""Resident memory of a device's `halp` process, as its kernel counts it.

`resident()` reads this process's current (`VmRSS`) and peak (`VmHWM`) resident set from
/proc/self/status, in bytes: what the device really holds, beside what a plan says it needs
(`halp.memory`, which leaves out Python, PyTorch and message buffers). A worker sends its
reading with each REPORT; the host checks what arrives (`checked_resident`), keeps each
worker's latest, and writes them with its own in the run's meta (`resident_bytes`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from halp.runtime.wire import WireError

STATUS = Path("/proc/self/status")
MAX_RESIDENT_BYTES = 1 << 40  # 1 TiB
_FIELDS = {"VmRSS": "rss", "VmHWM": "peak"}


def resident(status: Path = STATUS) -> dict[str, int] | None:
    """{"rss": current, "peak": highest} resident bytes of this process; None where the
    kernel does not say (no /proc, as off Linux)."""
    try:
        return parse_status(status.read_text())
    except (OSError, ValueError):
        return None


def parse_status(text: str) -> dict[str, int]:
    """The resident figures of a /proc/PID/status text (`VmRSS: 123 kB`), in bytes."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in _FIELDS:
            number, unit = value.split()
            if unit != "kB":
                raise ValueError(f"{key} in {unit}, not kB")
            found[_FIELDS[key]] = int(number) * 1024
    if len(found) != len(_FIELDS):
        raise ValueError(f"no {' and '.join(_FIELDS)} in the status")
    return found


def checked_resident(value: Any) -> dict[str, int] | None:
    """A resident reading received from a worker (None: it had none), checked: whole bytes
    from 0 to 1 TiB, the peak no less than the current. WireError, in one line, otherwise."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != set(_FIELDS.values()):
        raise WireError(f"resident memory {repr(value)[:80]} is not {{\"rss\": bytes, "
                        "\"peak\": bytes}")
    for key, number in value.items():
        if not isinstance(number, int) or isinstance(number, bool) \
                or not 0 <= number <= MAX_RESIDENT_BYTES:
            raise WireError(f"resident memory {key} {repr(number)[:40]} is not a whole number "
                            f"of bytes from 0 to {MAX_RESIDENT_BYTES}")
    if value["peak"] < value["rss"]:
        raise WireError(f"resident memory peak {value['peak']} is below its current "
                        f"{value['rss']}")
    return {"rss": value["rss"], "peak": value["peak"]}
