"""`halp plan SCENARIO`: per segment and device, the rows, FLOPs, bytes and predicted times;
and per device the memory the plan needs (weights and peak activations, `halp.memory`)."""

from __future__ import annotations

import argparse
from collections import defaultdict

from halp.cli.common import add_scenario, print_json, scenario_from_args
from halp.memory import plan_memory
from halp.plan import Compute, Gather, Transfer
from halp.schedule import estimate
from halp.serving import policy_for


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="show the plan a method makes for a scenario")
    add_scenario(p)
    p.add_argument("--ops", action="store_true", help="also list every op in plan order")
    p.add_argument("--json", action="store_true", help="print the plan and its summary as JSON")
    p.set_defaults(func=run)


def summarise(plan, prepared) -> dict:
    graph, latency = prepared.graph, prepared.latency
    timing = estimate(plan, graph, latency)
    segments = list(plan.segments) or [(0, len(graph))]

    def segment_of(boundary: int, incoming: bool = False) -> int:
        """The segment whose output is at `boundary` (or whose input, for `incoming`)."""
        for i, (a, b) in enumerate(segments):
            if (a <= boundary < b) if incoming else (a < boundary <= b):
                return i
        return len(segments)  # the host-only tail

    rows: dict[tuple[int, str], dict] = defaultdict(lambda: {"rows": [], "flops": 0.0, "bytes_in": 0,
                                                              "bytes_out": 0, "busy_s": 0.0})
    for op in plan.ops:
        if isinstance(op, Compute):
            r = rows[(segment_of(op.stop), op.device)]
            full_width = op.out.cols.size == graph.width(op.stop)
            r["rows"].append(f"{op.out.rows}" if full_width else f"{op.out}")
            r["flops"] += op.flops
            r["busy_s"] += timing.duration[op.id]
        elif isinstance(op, Transfer):
            seg = segment_of(op.boundary, incoming=op.src == plan.host)
            rows[(seg, op.src)]["bytes_out"] += op.bytes
            rows[(seg, op.dst)]["bytes_in"] += op.bytes
        elif isinstance(op, Gather):
            rows[(segment_of(op.boundary), op.device)]["busy_s"] += timing.duration[op.id]
    table = []
    for (seg, device), r in sorted(rows.items()):
        layers = list(segments[seg]) if seg < len(segments) else [segments[-1][1], len(graph)]
        table.append({"segment": seg, "layers": layers, "device": device, **r})
    limits = {d.name: d.memory_bytes for d in prepared.cluster.devices}
    memory = {d: {**m.to_dict(), "limit_bytes": limits.get(d)}
              for d, m in plan_memory(plan, graph).items()}
    return {"method": plan.method, "model": plan.model, "ops": len(plan.ops),
            "predicted_latency_s": timing.makespan, "segments": [list(s) for s in segments],
            "table": table, "memory": memory}


def memory_lines(memory: dict) -> list[str]:
    """The per-device memory table of `summarise`."""
    lines = ["memory per device for one request (weights of what it computes + peak of the "
             "activations it holds):",
             f"{'device':<10} {'weights MB':>11} {'activ. MB':>10} {'total MB':>9} {'limit MB':>9}"]
    for device, m in memory.items():
        limit = "-" if m["limit_bytes"] is None else f"{m['limit_bytes'] / 1e6:.0f}"
        lines.append(f"{device:<10} {m['weights_bytes'] / 1e6:>11.1f} "
                     f"{m['peak_activation_bytes'] / 1e6:>10.1f} {m['total_bytes'] / 1e6:>9.1f} "
                     f"{limit:>9}")
    return lines


def run(args: argparse.Namespace) -> int:
    scenario = scenario_from_args(args)
    for served in policy_for(scenario).served():
        summary = summarise(served.plan, served.prepared)
        if args.json:
            print_json({**summary, "plan": served.plan.to_dict()})
            continue
        print(f"{summary['method']} on {summary['model']}: {summary['ops']} ops, "
              f"predicted latency {summary['predicted_latency_s'] * 1e3:.1f} ms")
        print(f"{'seg':>3} {'layers':<9} {'device':<10} {'output rows':<24} {'GFLOP':>7} "
              f"{'in kB':>9} {'out kB':>9} {'busy ms':>9}")
        for r in summary["table"]:
            rows = ",".join(r["rows"]) or "-"
            print(f"{r['segment']:>3} {r['layers'][0]:>3}-{r['layers'][1]:<5} {r['device']:<10} "
                  f"{rows:<24} {r['flops'] / 1e9:>7.3f} {r['bytes_in'] / 1e3:>9.1f} "
                  f"{r['bytes_out'] / 1e3:>9.1f} {r['busy_s'] * 1e3:>9.2f}")
        for line in memory_lines(summary["memory"]):
            print(line)
        left_out = served.plan.meta.get("left_out_for_memory")
        if left_out:
            print(f"left out, their memory too small for their part: {', '.join(left_out)}")
        if args.ops:
            print(served.plan)
    return 0
