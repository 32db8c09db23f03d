"""How long planning takes: HALP and every baseline on ResNet-50, VGG-16 and MobileNet-V2.

Scenarios built in code: 3 or 8 devices of profile `rpi4` at speed 1 (d0 the host), a star of
100 Mbps links. Each plan is made cold, as `halp plan` makes it: a fresh latency model (no
memo of earlier predictions) and a fresh copy of the traced graph (no memo of its row
arithmetic); tracing the model is not timed. A plan's time is `plan_for` (plan, then
`halp.plan.validate`), wall clock and this process's CPU time (which other processes' load
does not inflate), the best of `--runs`. Prints one row per model and device count: each
planner's seconds, and HALP's time over the slowest baseline's. The target is HALP on
ResNet-50 in under 10 s on 3 and on 8 devices.

    .venv/bin/python bench/plan_speed.py [--runs 1] [--models resnet50,vgg16,mobilenet_v2]
                                         [--devices 3,8]
"""

from __future__ import annotations

import argparse
import time

from halp.cluster import Cluster, Device
from halp.latency.model import LatencyModel
from halp.latency.ops import graph_of
from halp.latency.profile import load_profile
from halp.methods import PlannedMethod, plan_for
from halp.model.graph import ModelGraph
from halp.model.zoo import ModelSpec
from halp.network import BandwidthTrace
from halp.scenario import DeepthingsMethod, HalpMethod, ModnnMethod, OffloadMethod, StandaloneMethod

METHODS: dict[str, PlannedMethod] = {
    "standalone": StandaloneMethod(name="standalone"), "equal": HalpMethod(name="equal"),
    "modnn": ModnnMethod(name="modnn"), "deepthings": DeepthingsMethod(name="deepthings"),
    "offload": OffloadMethod(name="offload"), "halp": HalpMethod(name="halp")}
TARGET_S = 10.0  # HALP on ResNet-50


def star(devices: int, profile: str = "rpi4", bandwidth_bps: float = 100e6) -> Cluster:
    """`devices` devices of `profile` at speed 1, d0 the host, a star of `bandwidth_bps` links."""
    prof = load_profile(profile)
    names = [f"d{i}" for i in range(devices)]
    links = {n: bandwidth_bps for n in names[1:]}
    return Cluster(tuple(Device(n, prof) for n in names), names[0], "star", links,
                   {n: BandwidthTrace.constant(bandwidth_bps) for n in names[1:]})


def fresh(graph: ModelGraph) -> ModelGraph:
    """The same graph without the memos planning leaves on it."""
    return ModelGraph(graph.name, graph.input_shape, graph.layers, graph.runners)


def plan_seconds(method: PlannedMethod, graph: ModelGraph, cluster: Cluster, runs: int) -> tuple[float, float]:
    """(wall, CPU) seconds of the fastest of `runs` cold plans."""
    best = (float("inf"), float("inf"))
    for _ in range(runs):
        g, latency = fresh(graph), LatencyModel(cluster)
        w0, c0 = time.perf_counter(), time.process_time()
        plan_for(method, g, cluster, latency, g.name)
        best = min(best, (time.perf_counter() - w0, time.process_time() - c0))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="cold plans per case; the fastest counts")
    parser.add_argument("--models", default="resnet50,vgg16,mobilenet_v2")
    parser.add_argument("--devices", default="3,8")
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"--methods: unknown {', '.join(unknown)}; known: {', '.join(METHODS)}")

    print(f"cold plans, {args.runs} run(s) each, best; devices of profile rpi4 on a 100 Mbps star; "
          "seconds wall (CPU)")
    width = 15
    print(f"{'model':<13} {'devices':>7} " + " ".join(f"{m:>{width}}" for m in methods)
          + (f" {'halp/slowest other':>19}" if "halp" in methods and len(methods) > 1 else ""))
    resnet50: dict[int, float] = {}
    for name in args.models.split(","):
        graph = graph_of(ModelSpec(name))
        for n in (int(d) for d in args.devices.split(",")):
            cluster = star(n)
            times = {m: plan_seconds(METHODS[m], graph, cluster, args.runs) for m in methods}
            cells = " ".join(f"{f'{w:.2f} ({c:.2f})':>{width}}" for w, c in times.values())
            ratio = ""
            others = [w for m, (w, _) in times.items() if m != "halp"]
            if "halp" in times and others:
                ratio = f" {times['halp'][0] / max(max(others), 1e-9):>19.1f}"
            print(f"{name:<13} {n:>7} {cells}{ratio}", flush=True)
            if name == "resnet50" and "halp" in times:
                resnet50[n] = times["halp"][0]
    if resnet50:
        verdict = "met" if max(resnet50.values()) < TARGET_S else "NOT met"
        print("HALP on ResNet-50: " + ", ".join(f"{n} devices {s:.2f} s" for n, s in resnet50.items())
              + f" (target under {TARGET_S:g} s each: {verdict})")


if __name__ == "__main__":
    main()
