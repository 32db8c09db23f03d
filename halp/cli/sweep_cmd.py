"""`halp sweep SCENARIO --set network.bandwidth=10Mbps,50Mbps --set method.name=halp,modnn`.

Every `--set` with several comma-separated values is a sweep axis; a `--set` with one value is a
plain override (the same key given twice: the last wins). The grid is the cartesian product of
the axes, each point simulated in its own worker process (`--jobs`, default one per core), or
as a task on a Ray cluster with `--ray ADDRESS` (`pip install ray`; ADDRESS is a head node's
HOST:PORT, `auto` for the cluster this machine belongs to, or `local` to start a Ray instance
here; halp and the scenario file must be at the same paths on every node). Writes `sweep.csv`
and `sweep.png` (mean latency and speedup against the first axis, one line per combination of
the others).

A point that fails is a row with its error, and the others still run. The exit status says how
it went: 0 every point ran, 1 some failed (named on stderr: `3 of 12 points failed`), 2 every
point failed or the sweep could not start. A point whose plan computes something else than its
model (`halp.verdicts`, as `halp verify`) is such a failed row; `--no-verify` skips the check,
and the `verified` column and the last line say so.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from halp.cli.common import print_json
from halp.cli.run_cmd import add_no_verify
from halp.errors import HalpError
from halp.outdirs import new_folder
from halp.scenario import load_scenario
from halp.sweep import axes_of, grid, plot, run_grid, write_csv

SOME_FAILED = 1  # the exit status when some points failed (their rows say why); all: 2


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="simulate a grid of scenario variants in parallel")
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=V1,V2",
                   help="a sweep axis (several values) or an override (one value)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="worker processes (default: one per core)")
    p.add_argument("--ray", metavar="ADDRESS",
                   help="run the points on a Ray cluster: HOST:PORT, auto or local "
                        "(pip install ray)")
    p.add_argument("--out", type=Path, help="output folder (default runs/sweep-<name>-<time>)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    add_no_verify(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = str(Path(args.scenario).resolve())
    scenario = load_scenario(path)
    fixed, axes = axes_of(args.overrides)
    if not axes:
        raise HalpError("nothing to sweep: give --set KEY=V1,V2,... with several values "
                        "(for one run use `halp run`)")
    points = grid(axes)
    for values in points[:1]:  # a bad key or value fails here, before any worker starts
        scenario.with_values({**fixed, **values})
    out = args.out or new_folder(f"sweep-{scenario.name}")
    rows = run_grid(path, fixed, points, args.jobs, args.ray, quiet=args.json,
                    verify=args.verify)
    out.mkdir(parents=True, exist_ok=True)
    keys = list(axes)
    write_csv(rows, keys, out / "sweep.csv")
    plot(rows, keys, out / "sweep.png", f"{scenario.name}: sweep of {', '.join(keys)}")
    failed = [r for r in rows if r.get("error")]
    if args.json:
        print_json({"scenario": scenario.name, "axes": axes, "fixed": fixed, "rows": rows,
                    "verified": args.verify, "out": str(out)})
    else:
        wheres = ["  ".join(f"{k}={r[k]}" for k in keys) for r in rows]
        width = max(len(w) for w in wheres)
        for where, r in zip(wheres, rows, strict=True):
            result = (f"failed: {r['error']}" if r.get("error") else
                      f"mean {r['mean_s'] * 1e3:9.1f} ms  speedup {r['speedup'] or 0:5.2f}x")
            print(f"{where:<{width}}  {result}")
        print("plans of every point that ran verified exact" if args.verify else "plans not verified (--no-verify)")
        print(f"wrote {out / 'sweep.csv'} and {out / 'sweep.png'}")
    if not failed:
        return 0
    count = (f"{len(failed)} of {len(rows)} points failed; see the error column of "
             f"{out / 'sweep.csv'}")
    if len(failed) == len(rows):
        first = " ".join(str(failed[0]["error"]).split())
        raise HalpError(f"{count}; the first: {first}")
    print(f"halp sweep: {count}", file=sys.stderr)
    return SOME_FAILED
