"""Output folders: a new one per run under `runs/` (or the folder the user chose), and every
path built from a name (a scenario's, a method's) checked to stay inside its folder.

Names are already restricted (`halp.names`); this is the second lock: a path is resolved
(symbolic links and `..` followed) and refused unless it lies inside the folder it was built in.
"""

from __future__ import annotations

import time
from pathlib import Path

from halp.errors import HalpError

RUNS = Path("runs")


def inside(root: Path, path: Path) -> Path:
    """`path`, when it resolves to a place inside `root`; else a `HalpError`."""
    if not path.resolve().is_relative_to(root.resolve()):
        raise HalpError(f"{path}: outside the output folder {root}; refused")
    return path


def below(root: Path, name: str) -> Path:
    """`root / name`, checked to stay inside `root`."""
    return inside(root, root / name)


def new_folder(stem: str, root: Path = RUNS) -> Path:
    """A folder name not taken yet: `root/<stem>-<date>-<time>`, then `-2`, `-3`..., inside
    `root` (not created here)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = below(root, f"{stem}-{stamp}")
    n = 2
    while out.exists():
        out = below(root, f"{stem}-{stamp}-{n}")
        n += 1
    return out
