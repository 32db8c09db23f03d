"""`halp run SCENARIO [--backend sim] [--out DIR] [--json] [--set k=v]`: one run, one folder.

The folder holds the scenario as run (`scenario.yaml`), `plan.json`, the records as they happen
(`ops.jsonl`, `requests.jsonl`), `report.json`, `timeline.png` and `trace.json` (Chrome trace
format: open it in https://ui.perfetto.dev). Speedup is against the stand-alone latency of the
same scenario, simulated in the same run (method standalone, one request); on a measured
backend the line says so (`halp compare` with method standalone measures it instead).

`execute` and `standalone_s` are what `halp compare` and `halp sweep` reuse.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from halp.backends import BACKENDS, load_backend, ready_backend
from halp.cli.common import (
    add_scenario,
    print_json,
    scenario_from_args,
    warn_if_emulated_differently,
)
from halp.errors import HalpError
from halp.methods import Prepared, make_plan, prepare
from halp.report import latency_stats, summarise, timeline_png
from halp.scenario import Scenario
from halp.serving import Policy, policy_for
from halp.trace import CHROME_FILE, TraceWriter, chrome_trace

SUMMARY_KEYS = ("method", "backend", "requests", "latency_s", "standalone_latency_s", "speedup",
                "deadline_hit_rate", "mean_top1", "choices", "prediction_error_mean")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a scenario on a backend and write its output folder")
    add_scenario(p)
    p.add_argument("--backend", default="sim", choices=list(BACKENDS),
                   help="sim (default), emu or hw")
    p.add_argument("--out", type=Path, help="output folder (default runs/<name>-<backend>-<time>)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def default_out(name: str, backend: str, root: Path = Path("runs")) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = root / f"{name}-{backend}-{stamp}"
    n = 2
    while out.exists():
        out = root / f"{name}-{backend}-{stamp}-{n}"
        n += 1
    return out


def alone(scenario: Scenario) -> Scenario:
    """The same scenario with the stand-alone method and a single request."""
    return scenario.with_values({"method.name": "standalone", "workload.requests": 1,
                                 "workload.arrival": "single"})


def standalone_s(scenario: Scenario, prepared: Prepared | None = None) -> float:
    """The simulated latency of one request run entirely on the host."""
    single = alone(scenario)
    if prepared is None or prepared.spec != single.model_spec():
        prepared = prepare(single)
    return single_request_s(single, prepared)


def single_request_s(scenario: Scenario, prepared: Prepared) -> float:
    """The simulated latency of one request of the scenario's method on an idle cluster."""
    simulate = load_backend("sim").simulate
    plan = make_plan(scenario, prepared)
    return simulate(scenario.cluster(), prepared.graph, plan, [0.0], seed=scenario.seed)[0]


def _plans_json(policy: Policy) -> Any:
    plans = [s.plan.to_dict() for s in policy.served()]
    return plans[0] if len(plans) == 1 else plans


def execute(scenario: Scenario, backend: str, out: Path | None, policy: Policy | None = None,
            standalone: float | None = None, figures: bool = True,
            standalone_source: str = "simulated") -> dict[str, Any]:
    """Run `scenario` on `backend`, writing the output folder `out` (None: nothing on disk).
    Returns the report. If the backend fails, the records written so far stay in `out`.
    The speedup is against `standalone` (default: simulated here); `standalone_source` says
    whether that was simulated or measured on the same backend, and goes into the report.
    Measured with no `standalone` given: this run is the stand-alone reference itself."""
    module = ready_backend(backend, scenario)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "scenario.yaml").write_text(scenario.to_yaml())
    policy = policy or policy_for(scenario)
    if out is not None:
        (out / "plan.json").write_text(json.dumps(_plans_json(policy)))
    served = policy.served()
    first = served[0]
    method = scenario.method.name
    with TraceWriter(out, backend, method) as writer:
        try:
            trace = module.run(scenario, policy, writer)
        except HalpError as exc:
            if out is None:
                raise
            raise HalpError(f"{exc} (the records so far are in {out})") from exc
    if standalone is None and standalone_source == "measured":
        standalone = latency_stats(trace.latencies())["mean"]
    elif standalone is None:
        standalone = standalone_s(scenario, first.prepared)
    report = summarise(trace, standalone)
    models = sorted({r.model for r in trace.requests}) or [first.plan.model]
    report.update({"standalone_source": standalone_source,
                   "method": method, "scenario": scenario.name, "model": ",".join(models),
                   "out": str(out) if out is not None else None, "meta": trace.meta})
    if out is not None:
        (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
        (out / CHROME_FILE).write_text(json.dumps(chrome_trace(trace)))
        if figures:
            timeline_png(trace, out / "timeline.png",
                         plan=first.plan if len(served) == 1 else None,
                         title=f"{scenario.name}: {method} on {backend}")
    return report


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:.1f}"


def describe(report: dict[str, Any]) -> list[str]:
    lat = report["latency_s"]
    lines = [f"{report['scenario']}: {report['method']} on {report['backend']}, "
             f"{report['requests']} request(s) of {report['model']}",
             f"  latency ms: mean {ms(lat['mean'])}  p50 {ms(lat['p50'])}  p95 {ms(lat['p95'])}  "
             f"max {ms(lat['max'])}"]
    speed = f"{report['speedup']:.2f}x" if report["speedup"] else "-"
    source = report.get("standalone_source", "simulated")
    label = f" ({source})" if report["backend"] != "sim" else ""  # on sim both are simulated
    line = f"  stand-alone{label} {ms(report['standalone_latency_s'])} ms, speedup {speed}"
    if report["deadline_hit_rate"] is not None:
        line += f", deadline met by {report['deadline_hit_rate']:.0%} of requests"
    lines.append(line)
    if len(report["choices"]) > 1 or report.get("mean_top1") is not None:
        counts = ", ".join(f"{v} x{n}" for v, n in sorted(report["choices"].items(), key=lambda x: -x[1]))
        top1 = f"{report['mean_top1']:.1f}%" if report["mean_top1"] is not None else "-"
        error = report["prediction_error_mean"]
        lines.append(f"  models served: {counts}; mean top-1 {top1}"
                     + (f"; predicted latency off by {error:.0%} on average" if error is not None else ""))
    return lines


def run(args: argparse.Namespace) -> int:
    scenario = scenario_from_args(args)
    out = args.out or default_out(scenario.name, args.backend)
    ready_backend(args.backend, scenario)  # what cannot run here is one line, said first
    warn_if_emulated_differently(scenario, args.backend)
    report = execute(scenario, args.backend, out)
    if args.json:
        print_json({**{k: report[k] for k in SUMMARY_KEYS}, "out": report["out"],
                    "utilisation": report["utilisation"]})
        return 0
    for line in describe(report):
        print(line)
    print(f"  wrote {out}/ (timeline.png; trace.json opens in https://ui.perfetto.dev)")
    return 0

