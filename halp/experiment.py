"""A scenario run on a backend, and several methods run side by side: what `halp run`,
`halp compare` and `halp sweep` do, without the printing.

A run writes one folder: the scenario as run (`scenario.yaml`), `plan.json`, the records as they
happen (`ops.jsonl`, `requests.jsonl`), `report.json`, `timeline.png` and `trace.json` (Chrome
trace format). Speedups are against the stand-alone latency of the same scenario, simulated
here (method standalone, one request), unless the caller measured it on the same backend.
Every file is strict JSON (`allow_nan=False`): a NaN or an infinity is a bug to fix where it
is computed, and fails loudly here rather than writing a file no JSON reader accepts.

Reports carry what each device must hold (`memory`: weights and peak activations of the plans
served, `halp.memory`; on emu and hw beside what each device's process measured) and the energy of a request (`energy`, `halp.energy`: the profiles' power
models applied to the trace's times, simulated or measured); `compare` says which methods fit
a device of 512 MB, 1 GB and 2 GB (`fits`).

No time is reported for a plan that computes something else than its model: unless the caller
says `verify=False`, every plan a run serves (and the stand-alone plan of its speedup) is
checked exact first (`halp.verdicts`, cached), and the report says whether it was (`verified`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from halp.backends import load_backend, ready_backend
from halp.energy import energy_report, powers_of
from halp.errors import HalpError, PlanError, ScenarioError
from halp.latency.model import LatencyModel
from halp.memory import memory_report, plan_memory
from halp.methods import Prepared, make_plan, prepare
from halp.outdirs import below
from halp.policy import Policy, Served
from halp.report import bars_png, latency_stats, summarise, timeline_png
from halp.scenario import MAX_RECORDED_OPS, Scenario
from halp.serving import FixedPolicy, policy_for
from halp.trace import CHROME_FILE, TraceWriter, write_chrome_trace
from halp.verdicts import CheckedPolicy, Checks, PlanMismatch, Verdict

STANDALONE = "standalone"


def alone(scenario: Scenario) -> Scenario:
    """The same scenario with the stand-alone method and a single request."""
    return scenario.with_values({"method.name": STANDALONE, "workload.requests": 1,
                                 "workload.arrival": "single"})


def standalone_s(scenario: Scenario, prepared: Prepared | None = None,
                 checks: Checks | None = None) -> float:
    """The simulated latency of one request run entirely on the host (its plan checked exact
    by `checks`, when given)."""
    single = alone(scenario)
    if prepared is None or prepared.spec != single.model_spec():
        prepared = prepare(single)
    return single_request_s(single, prepared, checks)


def single_request_s(scenario: Scenario, prepared: Prepared, checks: Checks | None = None) -> float:
    """The simulated latency of one request of the scenario's method on an idle cluster (no
    jitter: the plan's own latency). With `checks`, a plan that is not exact is refused."""
    single = scenario.with_values({"workload.requests": 1, "workload.arrival": "single",
                                   "network.jitter": 0.0})
    answer = Served(make_plan(single, prepared), prepared)
    if checks is not None:
        checks.require([answer])
    policy = FixedPolicy(answer)
    trace = load_backend("sim").run(single, policy, TraceWriter(None, "sim", single.method.name))
    return trace.latencies()[0]


def check_recorded_ops(scenario: Scenario, policy: Policy) -> None:
    """Refuse, before anything runs, a workload whose records would not fit: a run keeps one
    record per op of every request (`MAX_RECORDED_OPS`)."""
    ops = max(len(s.plan.ops) for s in policy.served())
    total = scenario.workload.requests * ops
    if total > MAX_RECORDED_OPS:
        raise ScenarioError(
            f"{scenario.name}: workload.requests: {scenario.workload.requests} requests of a "
            f"{ops}-op plan would record {total:,} ops; at most {MAX_RECORDED_OPS:,} "
            f"(use at most {MAX_RECORDED_OPS // ops} requests)")


def _plans_json(policy: Policy) -> Any:
    plans = [s.plan.to_dict() for s in policy.served()]
    return plans[0] if len(plans) == 1 else plans


def execute(scenario: Scenario, backend: str, out: Path | None, policy: Policy | None = None,
            standalone: float | None = None, figures: bool = True,
            standalone_source: str = "simulated", verify: bool = True,
            checks: Checks | None = None) -> dict[str, Any]:
    """Run `scenario` on `backend`, writing the output folder `out` (None: nothing on disk).
    Returns the report. If the backend fails, the records written so far stay in `out`.
    The speedup is against `standalone` (default: simulated here); `standalone_source` says
    whether that was simulated or measured on the same backend, and goes into the report.
    Measured with no `standalone` given: this run is the stand-alone reference itself.

    With `verify` (`checks`: the caller's tally, shared across runs), every plan the policy
    serves is checked exact before anything is written (`PlanMismatch` otherwise), and so is
    every plan it makes while serving on the simulator; on a measured backend the host serves
    the plans itself and its runtime compares every request's output with the whole model."""
    runner = ready_backend(backend, scenario)
    policy = policy or policy_for(scenario)
    check_recorded_ops(scenario, policy)
    first = policy.served()[0]
    if verify:
        checks = checks.child() if checks is not None else Checks(seed=scenario.seed)
        checks.require(policy.served())
        policy = CheckedPolicy(policy, checks)
    if standalone is None and standalone_source != "measured":  # before the run: it may refuse
        standalone = standalone_s(scenario, first.prepared, checks if verify else None)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "scenario.yaml").write_text(scenario.to_yaml())
    if out is not None:
        (out / "plan.json").write_text(json.dumps(_plans_json(policy), allow_nan=False))
    served = policy.served()
    method = scenario.method.name
    with TraceWriter(out, backend, method) as writer:
        try:
            trace = runner.run(scenario, policy, writer)
        except HalpError as exc:
            if out is None:
                raise
            raise HalpError(f"{exc} (the records so far are in {out})") from exc
    if standalone is None:  # measured: this run is the reference
        standalone = latency_stats(trace.latencies())["mean"]
    report = summarise(trace, standalone)
    cluster = first.prepared.cluster
    report["memory"] = memory_report([plan_memory(s.plan, s.prepared.graph) for s in served],
                                     cluster, trace.meta.get("resident_bytes"))
    report["energy"] = energy_report(trace, powers_of(cluster), measured=backend != "sim")
    models = sorted({r.model for r in trace.requests}) or [first.plan.model]
    report.update(verification(checks if verify else None, backend))
    report.update({"standalone_source": standalone_source,
                   "method": method, "scenario": scenario.name, "model": ",".join(models),
                   "out": str(out) if out is not None else None, "meta": trace.meta})
    if out is not None:
        (out / "report.json").write_text(json.dumps(report, indent=2, default=str,
                                                     allow_nan=False))
        write_chrome_trace(trace, out / CHROME_FILE)
        if figures:
            timeline_png(trace, out / "timeline.png",
                         plan=first.plan if len(served) == 1 else None,
                         title=f"{scenario.name}: {method} on {backend}")
    return report


def verification(checks: Checks | None, backend: str) -> dict[str, Any]:
    """What a report says of its plans' exactness: `verified`, and how it was established."""
    if checks is None:
        return {"verified": False, "verification": {"skipped": "--no-verify"}}
    summary = checks.summary()
    if backend != "sim":
        summary["while_serving"] = ("plans the host makes while serving are checked by its "
                                    "runtime: every request's output against the whole model")
    return {"verified": True, "verification": summary}


def compare(scenario: Scenario, methods: list[str], backend: str, out: Path | None,
            started: Callable[[str], None] | None = None,
            failed: Callable[[str, HalpError], None] | None = None,
            verify: bool = True) -> dict[str, Any]:
    """Every method of `methods` on the scenario's workload, each in its own folder under
    `out`, with the model and cluster prepared once. A method that fails is a row with its
    error; the others still run. On a measured backend with `standalone` among the methods,
    that method runs first and its measured mean is every speedup's reference. `started` and
    `failed` hear of each method as it starts and as it fails.

    Every method is planned, and with `verify` its plans checked exact, before any runs: a
    method whose plan computes something else refuses the whole comparison (`PlanMismatch`,
    naming every such method), with nothing run or written. A table missing one baseline
    would still read as a comparison; this way it is fixed or left out (`--methods`) on
    purpose."""
    prepared = prepare(scenario)
    checks = Checks(seed=scenario.seed) if verify else None
    try:
        alone_s = simulated_alone_s = standalone_s(scenario, prepared, checks)
    except PlanMismatch as exc:
        raise PlanMismatch(f"{exc} (the stand-alone plan: every speedup's reference); nothing "
                           "was run", exc.verdict) from None
    source = "simulated"
    if backend != "sim" and STANDALONE in methods:  # measure the reference first, then use it
        methods = [STANDALONE, *(m for m in methods if m != STANDALONE)]
    planned: dict[str, tuple[Scenario, Policy, float]] = {}
    fit: dict[str, dict[str, str]] = {}
    errors: dict[str, HalpError] = {}
    wrong: list[Verdict] = []
    for method in methods:
        variant = scenario.with_values({"method.name": method})
        try:
            policy = policy_for(variant, prepared)
            if checks is not None:
                wrong += [v for v in checks.check_plans(policy.served()) if not v.exact]
            planned[method] = (variant, policy, single_request_s(variant, prepared, checks))
            fit[method] = fit_marks(variant, prepared, policy)
        except PlanMismatch as exc:  # the one-request plan: the policy's own, planned again
            assert exc.verdict is not None
            wrong.append(exc.verdict)
        except HalpError as exc:
            errors[method] = exc
    if wrong:
        raise PlanMismatch(refusal(wrong), wrong[0])
    rows: list[dict[str, Any]] = []
    for method in methods:
        if method in errors:
            if failed is not None:
                failed(method, errors[method])
            rows.append({"method": method, "error": str(errors[method])})
            continue
        variant, policy, single = planned[method]
        if started is not None:
            started(method)
        try:
            reference = method == STANDALONE and backend != "sim"  # measured: the reference
            report = execute(variant, backend, below(out, method) if out else None, policy=policy,
                             standalone=None if reference else alone_s,
                             standalone_source="measured" if reference else source,
                             verify=verify, checks=checks)
            report["single_request_s"] = single
            report["fits"] = fit[method]
            if reference and report["standalone_latency_s"]:
                alone_s, source = report["standalone_latency_s"], "measured"
        except HalpError as exc:
            if failed is not None:
                failed(method, exc)
            rows.append({"method": method, "error": str(exc)})
            continue
        rows.append(report)
    result = {"scenario": scenario.name, "backend": backend, "standalone_latency_s": alone_s,
              "standalone_source": source, "simulated_standalone_s": simulated_alone_s,
              "requests": scenario.workload.requests,
              **verification(checks, backend), "methods": rows,
              "out": str(out) if out else None}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.json").write_text(json.dumps(result, indent=2, default=str,
                                                      allow_nan=False))
        write_compare_csv(rows, out / "compare.csv")
        bars_png(rows, out / "compare.png",
                 title=f"{scenario.name} on {backend}: {scenario.workload.requests} request(s)")
    return result


# The device sizes `compare` marks each method against.
FIT_SIZES = (("512MB", 512e6), ("1GB", 1e9), ("2GB", 2e9))


def fit_marks(scenario: Scenario, prepared: Prepared, policy: Policy) -> dict[str, str]:
    """Per size of FIT_SIZES, whether the method fits devices of that much memory: "yes" when
    every plan it serves needs at most that of every device; "re-planned" when not, but its
    planner, told that every device has that much, finds a plan that fits (`halp.methods`);
    "no" when it cannot (`select` is not re-planned)."""
    needs = [m.total_bytes for s in policy.served()
             for m in plan_memory(s.plan, s.prepared.graph).values()]
    largest = max(needs, default=0)
    marks = {}
    for label, size in FIT_SIZES:
        if largest <= size:
            marks[label] = "yes"
            continue
        limited = prepared.cluster.with_memory(size)
        try:
            make_plan(scenario, dataclasses.replace(prepared, cluster=limited,
                                                    latency=LatencyModel(limited)))
            marks[label] = "re-planned"
        except PlanError:
            marks[label] = "no"
    return marks


def refusal(wrong: list[Verdict]) -> str:
    """One line refusing a comparison: the first wrong plan, and which other methods' are."""
    line = wrong[0].refusal()
    others = sorted({v.method for v in wrong[1:]} - {wrong[0].method})
    if others:
        line += f"; so do the plans of {', '.join(others)}"
    return line + (f"; nothing was run (fix {'them' if others else 'it'}, or leave "
                   f"{'them' if others else 'it'} out of --methods)")


CSV_COLUMNS = ["method", "requests", "mean_s", "p50_s", "p95_s", "max_s", "single_request_s",
               "standalone_latency_s", "speedup", "deadline_hit_rate", "energy_j",
               "memory_need_bytes", "memory_need_device", *(f"fits_{label}" for label, _ in FIT_SIZES),
               "verified", "error"]


def row_of(report: dict[str, Any]) -> dict[str, Any]:
    lat = report.get("latency_s") or {}
    return {"method": report["method"], "requests": report.get("requests"),
            "mean_s": lat.get("mean"), "p50_s": lat.get("p50"), "p95_s": lat.get("p95"),
            "max_s": lat.get("max"), "single_request_s": report.get("single_request_s"),
            "standalone_latency_s": report.get("standalone_latency_s"),
            "speedup": report.get("speedup"), "deadline_hit_rate": report.get("deadline_hit_rate"),
            "energy_j": (report.get("energy") or {}).get("mean_j"),
            "memory_need_bytes": (report.get("memory") or {}).get("largest_bytes"),
            "memory_need_device": (report.get("memory") or {}).get("largest_device"),
            **{f"fits_{label}": (report.get("fits") or {}).get(label) for label, _ in FIT_SIZES},
            "verified": report.get("verified"), "error": report.get("error", "")}


def write_compare_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for report in rows:
            writer.writerow(row_of(report))
