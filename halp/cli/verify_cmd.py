"""`halp verify SCENARIO`: execute the plan in-process and compare with the whole model.

The same check `halp run`, `compare` and `sweep` make before reporting a time
(`halp.verdicts`); here every plan is executed again, whatever the cache holds, and its
verdict stored for them.
"""

from __future__ import annotations

import argparse

from halp.cli.common import add_scenario, print_json, scenario_from_args
from halp.serving import policy_for
from halp.verdicts import TOLERANCE, check_plans


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check that the plan computes what the whole model computes")
    add_scenario(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def _number(value: float | None) -> str:
    return "not finite" if value is None else f"{value:.3g}"


def run(args: argparse.Namespace) -> int:
    scenario = scenario_from_args(args)
    verdicts = check_plans(policy_for(scenario).served(), seed=scenario.seed, fresh=True)
    results = [{"method": v.method, "model": v.model, "max_abs_error": v.max_abs_error,
                "relative_error": v.relative_error, "ops": v.ops, "exact": v.exact,
                **({"problem": v.problem} if v.problem else {})} for v in verdicts]
    ok = all(v.exact for v in verdicts)
    if args.json:
        print_json({"ok": ok, "tolerance": TOLERANCE, "plans": results})
    else:
        for v in verdicts:
            verdict = "ok" if v.exact else "MISMATCH"
            if v.problem:
                print(f"{v.method} on {v.model}: {v.ops} ops, cannot be executed against the "
                      f"whole model ({v.problem}) {verdict}")
                continue
            print(f"{v.method} on {v.model}: {v.ops} ops, largest absolute error "
                  f"{_number(v.max_abs_error)} (relative {_number(v.relative_error)}) {verdict}")
    return 0 if ok else 1
