"""`halp compare SCENARIO --methods halp,modnn,...`: the methods side by side on one scenario.

Every method runs the scenario's workload on the chosen backend (the simulator by default),
each in its own run folder under the output folder, with one model and cluster prepared once.
Writes `compare.json`, `compare.csv` and the bar chart `compare.png`, and prints a table:
latency under the workload (mean, p95), the latency of one request on an idle cluster
(simulated), speedup against stand-alone, and the deadline hit rate. The stand-alone latency is
simulated, except on a measured backend (emu, hw) with method standalone among the methods:
that method runs first, and its measured mean latency is the reference of every speedup.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

from halp.backends import BACKENDS, ready_backend
from halp.cli.common import (
    add_scenario,
    print_json,
    scenario_from_args,
    warn_if_emulated_differently,
)
from halp.cli.run_cmd import execute, ms, single_request_s, standalone_s
from halp.errors import HalpError
from halp.methods import prepare
from halp.report import bars_png
from halp.scenario import METHOD_NAMES
from halp.serving import StaticPolicy, policy_for
from halp.sweep import DYNAMIC

DEFAULT_METHODS = "halp,modnn,deepthings,equal,offload,standalone"
STANDALONE = "standalone"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="run several methods on one scenario, side by side")
    add_scenario(p)
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help=f"comma-separated methods (default {DEFAULT_METHODS})")
    p.add_argument("--backend", default="sim", choices=list(BACKENDS))
    p.add_argument("--out", type=Path, help="output folder (default runs/compare-<name>-<time>)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.set_defaults(func=run)


def methods_of(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHOD_NAMES]
    if unknown or not names:
        raise HalpError(f"--methods: unknown method {', '.join(unknown) or '(none)'}; "
                        f"use some of {', '.join(METHOD_NAMES)}")
    return names


def compare(scenario, methods: list[str], backend: str, out: Path | None,
            progress: bool = False) -> dict[str, Any]:
    prepared = prepare(scenario)
    alone_s = simulated_alone_s = standalone_s(scenario, prepared)
    source = "simulated"
    rows: list[dict[str, Any]] = []
    if backend != "sim" and STANDALONE in methods:  # measure the reference first, then use it
        methods = [STANDALONE, *(m for m in methods if m != STANDALONE)]
    for method in methods:
        variant = scenario.with_values({"method.name": method})
        if progress:
            print(f"compare: {method} ...", file=sys.stderr, flush=True)
        try:
            policy = (policy_for(variant) if method in DYNAMIC
                      else StaticPolicy(variant, prepared))
            reference = method == STANDALONE and backend != "sim"  # measured: the reference
            report = execute(variant, backend, out / method if out else None, policy=policy,
                             standalone=None if reference else alone_s,
                             standalone_source="measured" if reference else source)
            report["single_request_s"] = single_request_s(variant, prepared)
            if reference and report["standalone_latency_s"]:
                alone_s, source = report["standalone_latency_s"], "measured"
        except HalpError as exc:
            print(f"compare: {method} failed: {exc}", file=sys.stderr)
            rows.append({"method": method, "error": str(exc)})
            continue
        rows.append(report)
    result = {"scenario": scenario.name, "backend": backend, "standalone_latency_s": alone_s,
              "standalone_source": source, "simulated_standalone_s": simulated_alone_s,
              "requests": scenario.workload.requests, "methods": rows,
              "out": str(out) if out else None}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.json").write_text(json.dumps(result, indent=2, default=str))
        write_csv(rows, out / "compare.csv")
        bars_png(rows, out / "compare.png",
                 title=f"{scenario.name} on {backend}: {scenario.workload.requests} request(s)")
    return result


CSV_COLUMNS = ["method", "requests", "mean_s", "p50_s", "p95_s", "max_s", "single_request_s",
               "standalone_latency_s", "speedup", "deadline_hit_rate", "error"]


def row_of(report: dict[str, Any]) -> dict[str, Any]:
    lat = report.get("latency_s") or {}
    return {"method": report["method"], "requests": report.get("requests"),
            "mean_s": lat.get("mean"), "p50_s": lat.get("p50"), "p95_s": lat.get("p95"),
            "max_s": lat.get("max"), "single_request_s": report.get("single_request_s"),
            "standalone_latency_s": report.get("standalone_latency_s"),
            "speedup": report.get("speedup"), "deadline_hit_rate": report.get("deadline_hit_rate"),
            "error": report.get("error", "")}


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for report in rows:
            writer.writerow(row_of(report))


def table(result: dict[str, Any]) -> list[str]:
    source = "" if result["backend"] == "sim" else f" ({result['standalone_source']})"
    lines = [f"{result['scenario']} on {result['backend']}: {result['requests']} request(s) per "
             f"method; stand-alone{source} {ms(result['standalone_latency_s'])} ms",
             f"{'method':<11} {'mean ms':>9} {'p95 ms':>9} {'speedup':>8} {'1-req ms':>9} "
             f"{'1-req x':>8} {'deadline':>9}"]
    for r in result["methods"]:
        if "error" in r:
            lines.append(f"{r['method']:<11} failed: {r['error']}")
            continue
        lat = r["latency_s"]
        speed = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        hit = "-" if r["deadline_hit_rate"] is None else f"{r['deadline_hit_rate']:.0%}"
        alone = result["simulated_standalone_s"] / r["single_request_s"]
        lines.append(f"{r['method']:<11} {ms(lat['mean']):>9} {ms(lat['p95']):>9} {speed:>8} "
                     f"{ms(r['single_request_s']):>9} {alone:>7.2f}x {hit:>9}")
    lines.append("speedup = stand-alone latency / mean latency under the workload; 1-req = one "
                 "request on an idle cluster, simulated")
    return lines


def run(args: argparse.Namespace) -> int:
    scenario = scenario_from_args(args)
    methods = methods_of(args.methods)
    out = args.out or Path("runs") / f"compare-{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    ready_backend(args.backend, scenario)  # what cannot run here is one line, said first
    warn_if_emulated_differently(scenario, args.backend)
    result = compare(scenario, methods, args.backend, out, progress=not args.json)
    if all("error" in r for r in result["methods"]):
        raise HalpError("every method failed; see the lines above")
    if args.json:
        print_json(result)
        return 0
    for line in table(result):
        print(line)
    print(f"figures: {out / 'compare.png'} (bar chart); timelines: {out}/<method>/timeline.png")
    print(f"tables:  {out / 'compare.csv'}, {out / 'compare.json'}")
    return 0
