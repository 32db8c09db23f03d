"""`halp verify SCENARIO`: execute the plan in-process and compare with the whole model."""

from __future__ import annotations

import argparse

from halp.cli.common import add_scenario, print_json, scenario_from_args
from halp.execute import max_error
from halp.serving import policy_for

TOLERANCE = 1e-4  # relative to the largest output magnitude


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check that the plan computes what the whole model computes")
    add_scenario(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    scenario = scenario_from_args(args)
    results = []
    for served in policy_for(scenario).served():
        prep = served.prepared
        error, scale = max_error(served.plan, prep.graph, prep.model, seed=scenario.seed)
        relative = error / max(scale, 1e-30)
        results.append({"method": served.plan.method, "model": served.plan.model,
                        "max_abs_error": error, "relative_error": relative,
                        "ops": len(served.plan.ops), "exact": relative <= TOLERANCE})
    ok = all(r["exact"] for r in results)
    if args.json:
        print_json({"ok": ok, "tolerance": TOLERANCE, "plans": results})
    else:
        for r in results:
            verdict = "ok" if r["exact"] else "MISMATCH"
            print(f"{r['method']} on {r['model']}: {r['ops']} ops, largest absolute error "
                  f"{r['max_abs_error']:.3g} (relative {r['relative_error']:.3g}) {verdict}")
    return 0 if ok else 1
