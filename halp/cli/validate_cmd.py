"""`halp validate SCENARIO --against emu`: the simulator's prediction against a measured run.

Both backends serve the same workload with the same policy (the same plans); the traces join on
(request, op). Prints the per-request latency error and the op-duration MAPE per kind, and with
`--out` writes both traces, `validation.json` and `validation.png` (predicted against measured).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from halp.backends import load_backend, ready_backend
from halp.cli.common import add_scenario, print_json, scenario_from_args
from halp.serving import policy_for
from halp.trace import TraceWriter
from halp.validate import compare, format_summary, scatter

TARGET = 0.10  # mean per-request latency error the simulator should stay within


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="compare the simulator with a measured run of the same plans")
    add_scenario(p)
    p.add_argument("--against", choices=["emu", "hw"], default="emu",
                   help="the measuring backend (default: emu)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for both traces, validation.json and validation.png")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    scenario = scenario_from_args(args)
    measuring = ready_backend(args.against, scenario)  # one line, before anything is written
    simulator = load_backend("sim")
    policy = policy_for(scenario)
    out: Path | None = args.out
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "scenario.yaml").write_text(scenario.to_yaml())
    method = scenario.method.name
    with TraceWriter(out / args.against if out else None, args.against, method) as writer:
        measured = measuring.run(scenario, policy, writer)
    with TraceWriter(out / "sim" if out else None, "sim", method) as writer:
        predicted = simulator.run(scenario, policy, writer)
    validation = compare(predicted, measured)
    validation.meta.update({"scenario": scenario.name, "method": method,
                            "against": args.against, "target": TARGET})
    summary = validation.summary()
    if out is not None:
        (out / "validation.json").write_text(json.dumps(summary, indent=2) + "\n")
        scatter(validation, out / "validation.png",
                title=f"{scenario.name}: simulator against {args.against}")
    if args.json:
        print_json(summary)
    else:
        print(format_summary(summary, TARGET))
        if out is not None:
            print(f"wrote {out / 'validation.json'} and {out / 'validation.png'}")
    return 0
