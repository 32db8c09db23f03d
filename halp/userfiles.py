"""Files a user names (scenarios, profiles, traces, weights, policies, factories): they exist,
are regular files and are not absurdly large, or the refusal says so in one line.

Checked before anything opens them, so a directory is "is a directory" rather than whatever a
reader makes of it, a FIFO or a device never blocks a read, and a huge file is refused before
it fills memory.
"""

from __future__ import annotations

import stat
from pathlib import Path

from halp.errors import HalpError

MB = 1_000_000
GB = 1_000_000_000


def size_text(size: int) -> str:
    """A byte count as people say it: 1 MB, 4 GB, 512 bytes."""
    for unit, name in ((GB, "GB"), (MB, "MB"), (1000, "kB")):
        if size >= unit:
            return f"{size / unit:.3g} {name}"
    return f"{size} bytes"


def checked_file(path: str | Path, max_bytes: int) -> int:
    """The size of `path`, a regular file of at most `max_bytes`; else a `HalpError` naming it."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise HalpError(f"{path}: no such file") from None
    except NotADirectoryError:
        raise HalpError(f"{path}: no such file (a part of the path is not a folder)") from None
    except OSError as exc:
        raise HalpError(f"{path}: cannot read it ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise HalpError(f"{path}: is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise HalpError(f"{path}: not a regular file")
    if info.st_size > max_bytes:
        raise HalpError(f"{path}: {size_text(info.st_size)}, larger than the "
                        f"{size_text(max_bytes)} such a file may have")
    return info.st_size


def read_limited(path: str | Path, max_bytes: int) -> bytes:
    """The bytes of a checked file, never more than `max_bytes` (it may grow meanwhile)."""
    checked_file(path, max_bytes)
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise HalpError(f"{path}: cannot read it ({exc.strerror})") from None
    if len(data) > max_bytes:
        raise HalpError(f"{path}: larger than the {size_text(max_bytes)} such a file may have")
    return data
