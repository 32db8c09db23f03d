"""`halp run SCENARIO [--backend sim] [--out DIR] [--json] [--set k=v]`: one run, one folder.

The folder holds the scenario as run (`scenario.yaml`), `plan.json`, the records as they happen
(`ops.jsonl`, `requests.jsonl`), `report.json`, `timeline.png` and `trace.json` (Chrome trace
format: open it in https://ui.perfetto.dev). Speedup is against the stand-alone latency of the
same scenario, simulated in the same run (method standalone, one request); on a measured
backend the line says so (`halp compare` with method standalone measures it instead).

The run itself is `halp.experiment.execute`, which `halp compare` and `halp sweep` reuse. It
first checks that every plan it will serve computes what the whole model computes
(`halp.verdicts`, as `halp verify`, cached) and refuses in one line otherwise; `--no-verify`
skips that, and the report and the summary then say the plans were not verified.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from halp.backends import BACKENDS, ready_backend
from halp.cli.common import (
    add_scenario,
    print_json,
    scenario_from_args,
    warn_if_emulated_differently,
)
from halp.experiment import execute
from halp.outdirs import new_folder

SUMMARY_KEYS = ("method", "backend", "requests", "latency_s", "standalone_latency_s", "speedup",
                "deadline_hit_rate", "mean_top1", "choices", "prediction_error_mean", "memory",
                "energy", "verified", "verification")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a scenario on a backend and write its output folder")
    add_scenario(p)
    p.add_argument("--backend", default="sim", choices=list(BACKENDS),
                   help="sim (default), emu or hw")
    p.add_argument("--out", type=Path, help="output folder (default runs/<name>-<backend>-<time>)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_no_verify(p)
    p.set_defaults(func=run)


def add_no_verify(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="do not check first that the plans compute what the whole model "
                             "computes (the report then says they were not verified)")


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:.1f}"


def verified_line(report: dict[str, Any]) -> str:
    """Whether the plans were checked exact, and how."""
    if not report.get("verified"):
        return "plans not verified (--no-verify)"
    v = report["verification"]
    made = v["checked_while_serving"]
    return (f"plans verified exact: {v['plans']}, {v['cache_hits']} of them from the cache"
            + (f", {made} made while serving" if made else ""))


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
    lines.append(f"  {memory_line(report['memory'])}")
    if (resident := resident_line(report["memory"])) is not None:
        lines.append(f"  {resident}")
    lines += [f"  {energy_line(report['energy'])}", f"  {verified_line(report)}"]
    return lines


def memory_line(memory: dict[str, Any]) -> str:
    """The largest memory a device needs (halp.memory)."""
    device = memory.get("largest_device")
    if device is None:
        return "memory: -"
    m = memory["per_device"][device]
    return (f"memory: at most {m['total_bytes'] / 1e6:.1f} MB on a device ({device}: weights "
            f"{m['weights_bytes'] / 1e6:.1f} MB + activations {m['peak_activation_bytes'] / 1e6:.1f} MB)")


def resident_line(memory: dict[str, Any]) -> str | None:
    """What each device's process held, measured (emu, hw), beside the plan's need."""
    measured = {d: m for d, m in memory["per_device"].items() if "resident_bytes" in m}
    if not measured:
        return None
    parts = ", ".join(f"{d} {m['resident_bytes'] / 1e6:.1f} MB (peak "
                      f"{m['peak_resident_bytes'] / 1e6:.1f}, plan {m['total_bytes'] / 1e6:.1f})"
                      for d, m in measured.items())
    return f"resident memory measured after the last request: {parts}"


def energy_line(energy: dict[str, Any]) -> str:
    """Energy per request (halp.energy), and where it comes from."""
    if energy.get("mean_j") is None:
        return f"energy: {energy.get('note') or '-'}"
    parts = ", ".join(f"{d} {j:.2f}" for d, j in energy["mean_per_device_j"].items())
    return f"energy per request: {energy['mean_j']:.2f} J ({parts} J); {energy['source']}"


def run(args: argparse.Namespace) -> int:
    scenario = scenario_from_args(args)
    out = args.out or new_folder(f"{scenario.name}-{args.backend}")
    ready_backend(args.backend, scenario)  # what cannot run here is one line, said first
    warn_if_emulated_differently(scenario, args.backend)
    report = execute(scenario, args.backend, out, verify=args.verify)
    if args.json:
        print_json({**{k: report[k] for k in SUMMARY_KEYS}, "out": report["out"],
                    "utilisation": report["utilisation"]})
        return 0
    for line in describe(report):
        print(line)
    print(f"  wrote {out}/ (timeline.png; trace.json opens in https://ui.perfetto.dev)")
    return 0

