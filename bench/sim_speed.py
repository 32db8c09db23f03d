"""How fast the simulator runs: simulated VGG-16 HALP requests per second on one core.

Three devices (scenarios/default.yaml), the plan made once; requests arrive every 2 s, so they
overlap on the devices the way a served workload does. Prints requests per second of the fast
path (`sim.engine.simulate`, no records), of the full backend (`sim.backend.run`, records kept
in memory), and SimPy events per second. The target is 2,000 requests per second.

    .venv/bin/python bench/sim_speed.py [--requests N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from halp.methods import prepare
from halp.scenario import load_scenario
from halp.serving import StaticPolicy
from halp.trace import TraceWriter
from sim.backend import BACKEND as simulator
from sim.engine import Simulator

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "default.yaml"


def best_of(runs: int, fn) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between arrivals")
    args = parser.parse_args()
    n = args.requests
    scenario = load_scenario(SCENARIO).with_values({
        "workload.requests": n, "workload.arrival": "periodic", "workload.interval": f"{args.interval}s"})
    prepared = prepare(scenario)
    policy = StaticPolicy(scenario, prepared)
    plan, graph = policy.answer.plan, prepared.graph
    arrivals = [i * args.interval for i in range(n)]
    events = 0

    def fast() -> None:
        nonlocal events
        sim = Simulator(prepared.cluster, observe=False)
        compiled = sim.compile(plan, graph)
        for at in arrivals:
            sim.submit(compiled, at)
        sim.run()
        events = sim.events

    def full() -> None:
        simulator.run(scenario, policy, TraceWriter(None, "sim", plan.method))

    fast_s = best_of(3, fast)
    full_s = best_of(3, full)
    print(f"VGG-16 {plan.method}, {len(plan.ops)} ops per request, {len(prepared.cluster.devices)} "
          f"devices, {n} requests every {args.interval:g} s")
    print(f"fast path (simulate):   {n / fast_s:10,.0f} requests/s  {events / fast_s:12,.0f} SimPy events/s "
          f"({events / n:.1f} events per request)")
    print(f"full backend (records): {n / full_s:10,.0f} requests/s")


if __name__ == "__main__":
    main()
