"""`halp figures [NAME...]`: regenerate the figures, one script per figure under figures/.

Each script `figures/<name>.py` has `main(out_dir) -> list[Path]`; with no NAME every figure is
made. The PNGs (and the CSVs they were drawn from) go to figures/out/ unless `--out` says where.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

from halp.errors import HalpError

FIGURES = Path(__file__).resolve().parents[2] / "figures"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("figures", help="regenerate the figures (scripts in figures/)")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="figures (or groups: `erl` is every erl_* figure) to make (default: all)")
    p.add_argument("--out", type=Path, help=f"output folder (default {FIGURES / 'out'})")
    p.add_argument("--list", action="store_true", help="list the figures and exit")
    p.set_defaults(func=run)


def available(folder: Path = FIGURES) -> dict[str, Path]:
    if not folder.is_dir():
        raise HalpError(f"no figures folder at {folder}; run from a checkout of the repository")
    return {p.stem: p for p in sorted(folder.glob("*.py")) if not p.stem.startswith("_")}


def load(path: Path) -> ModuleType:
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # the scripts share figures/_shared.py
    spec = importlib.util.spec_from_file_location(f"halp_figure_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "main", None)):
        raise HalpError(f"{path} has no main(out_dir)")
    return module


def run(args: argparse.Namespace) -> int:
    figures = available()
    if args.list:
        for name, path in figures.items():
            doc = (load(path).__doc__ or "").strip().splitlines()
            print(f"{name:<24} {doc[0] if doc else ''}")
        return 0
    # A group name stands for every figure whose name starts with it: `erl` -> erl_*.
    names = [m for n in args.names
             for m in ([n] if n in figures else [f for f in figures if f.startswith(f"{n}_")] or [n])]
    args.names = names
    unknown = [n for n in args.names if n not in figures]
    if unknown:
        raise HalpError(f"no figure {', '.join(unknown)}; known: {', '.join(figures)}")
    out = args.out or FIGURES / "out"
    for name in args.names or list(figures):
        t0 = time.perf_counter()
        written = load(figures[name]).main(out)
        files = ", ".join(str(p) for p in written or [])
        print(f"{name}: {files} ({time.perf_counter() - t0:.1f} s)")
    return 0
