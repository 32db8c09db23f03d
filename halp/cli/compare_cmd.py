"""`halp compare SCENARIO --methods halp,modnn,...`: the methods side by side on one scenario.

Every method runs the scenario's workload on the chosen backend (the simulator by default),
each in its own run folder under the output folder, with one model and cluster prepared once.
Writes `compare.json`, `compare.csv` and the bar chart `compare.png`, and prints a table:
latency under the workload (mean, p95), the latency of one request on an idle cluster
(simulated), speedup against stand-alone, the deadline hit rate, the energy of a request
(`halp.energy`), the largest memory a device needs and whether the method fits devices of
512 MB, 1 GB and 2 GB (`halp.memory`; "re-planned": it fits when planned for that memory). The stand-alone latency is
simulated, except on a measured backend (emu, hw) with method standalone among the methods:
that method runs first, and its measured mean latency is the reference of every speedup.

Every method is planned and its plans checked exact (`halp.verdicts`) before any runs: one
method whose plan computes something else refuses the whole comparison in one line, nothing
run or written (`--no-verify` skips the check, and the outputs say so).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from halp.backends import BACKENDS, ready_backend
from halp.cli.common import (
    add_scenario,
    print_json,
    scenario_from_args,
    warn_if_emulated_differently,
)
from halp.cli.run_cmd import add_no_verify, ms, verified_line
from halp.errors import HalpError
from halp.experiment import FIT_SIZES, compare
from halp.outdirs import new_folder
from halp.scenario import METHOD_NAMES

DEFAULT_METHODS = "halp,modnn,deepthings,equal,offload,standalone"
SOME_FAILED = 1  # the exit status when some methods failed (as halp sweep's for points)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="run several methods on one scenario, side by side")
    add_scenario(p)
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help=f"comma-separated methods (default {DEFAULT_METHODS})")
    p.add_argument("--backend", default="sim", choices=list(BACKENDS))
    p.add_argument("--out", type=Path, help="output folder (default runs/compare-<name>-<time>)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    add_no_verify(p)
    p.set_defaults(func=run)


def methods_of(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHOD_NAMES]
    if unknown or not names:
        raise HalpError(f"--methods: unknown method {', '.join(unknown) or '(none)'}; "
                        f"use some of {', '.join(METHOD_NAMES)}")
    return names


def table(result: dict[str, Any]) -> list[str]:
    source = "" if result["backend"] == "sim" else f" ({result['standalone_source']})"
    lines = [f"{result['scenario']} on {result['backend']}: {result['requests']} request(s) per "
             f"method; stand-alone{source} {ms(result['standalone_latency_s'])} ms",
             f"{'method':<11} {'mean ms':>9} {'p95 ms':>9} {'speedup':>8} {'1-req ms':>9} "
             f"{'1-req x':>8} {'deadline':>9} {'J/req':>7} {'need MB':>8} "
             + " ".join(f"{label:>6}" for label, _ in FIT_SIZES)]
    for r in result["methods"]:
        if "error" in r:
            lines.append(f"{r['method']:<11} failed: {r['error']}")
            continue
        lat = r["latency_s"]
        speed = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        hit = "-" if r["deadline_hit_rate"] is None else f"{r['deadline_hit_rate']:.0%}"
        alone = result["simulated_standalone_s"] / r["single_request_s"]
        joules = r["energy"]["mean_j"]
        need = r["memory"]["largest_bytes"]
        marks = " ".join(f"{MARKS[r['fits'][label]]:>6}" for label, _ in FIT_SIZES)
        lines.append(f"{r['method']:<11} {ms(lat['mean']):>9} {ms(lat['p95']):>9} {speed:>8} "
                     f"{ms(r['single_request_s']):>9} {alone:>7.2f}x {hit:>9} "
                     f"{'-' if joules is None else f'{joules:.2f}':>7} "
                     f"{'-' if need is None else f'{need / 1e6:.0f}':>8} {marks}")
    lines.append("speedup = stand-alone latency / mean latency under the workload; 1-req = one "
                 "request on an idle cluster, simulated")
    lines.append("J/req = energy of a request, all devices (" + energy_source(result) + "); need = "
                 "the largest memory a device needs (weights + peak activations); 512MB.. = fits "
                 "a device of that memory (yes; re = when planned for it; no)")
    lines.append(verified_line(result))
    return lines


MARKS = {"yes": "yes", "re-planned": "re", "no": "no"}


def energy_source(result: dict[str, Any]) -> str:
    """Where the energy figures come from, or why there are none."""
    for r in result["methods"]:
        energy = r.get("energy") or {}
        if energy.get("source"):
            return energy["source"]
    notes = {str((r.get("energy") or {}).get("note") or "") for r in result["methods"]} - {""}
    return "; ".join(sorted(notes)) or "none"


def run(args: argparse.Namespace) -> int:
    scenario = scenario_from_args(args)
    methods = methods_of(args.methods)
    out = args.out or new_folder(f"compare-{scenario.name}")
    ready_backend(args.backend, scenario)  # what cannot run here is one line, said first
    warn_if_emulated_differently(scenario, args.backend)
    result = compare(scenario, methods, args.backend, out,
                     started=None if args.json else _started, failed=_failed, verify=args.verify)
    failures = sum("error" in r for r in result["methods"])
    if failures == len(result["methods"]):
        raise HalpError("every method failed; see the lines above")
    if args.json:
        print_json(result)
    else:
        for line in table(result):
            print(line)
        print(f"figures: {out / 'compare.png'} (bar chart); timelines: {out}/<method>/timeline.png")
        print(f"tables:  {out / 'compare.csv'}, {out / 'compare.json'}")
    if failures:
        print(f"halp compare: {failures} of {len(result['methods'])} methods failed; the others "
              "are compared", file=sys.stderr)
        return SOME_FAILED
    return 0


def _started(method: str) -> None:
    print(f"compare: {method} ...", file=sys.stderr, flush=True)


def _failed(method: str, error: HalpError) -> None:
    print(f"compare: {method} failed: {error}", file=sys.stderr)
