"""Speed-up of HALP and MoDNN over stand-alone VGG-16, measured on emulated devices.

    sudo .venv/bin/python bench/emu_speedup.py [SCENARIO] [--rounds R] [--requests N]

Default scenario: `scenarios/emu_vgg16_3dev.yaml`, three equal devices, each a quarter of a
core, on 100 Mbps star links. One emulated network and one set of workers serve the three
methods in turn, R rounds of N requests each (workers stay up between runs, so no model build
lands in a latency; the machine's speed drifts by 10-20% over minutes, so methods alternate
rather than run one after the other). For each method: the median measured latency, the
simulator's prediction of the same plan, and the speed-up over stand-alone (medians), then the
speed-up within each round. Then, for HALP, where its time goes (busy time of every device and link in
one request, and the longest chain of ops), which is what limits the speed-up.

The published HALP prototype reached 1.7x on three Raspberry Pis (VGG-16).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emu.backend import EmulatedRun, devices_of  # noqa: E402
from halp.backends import load_backend, quota_runner  # noqa: E402
from halp.errors import HalpError  # noqa: E402
from halp.latency.probe import check_profiles  # noqa: E402
from halp.scenario import Scenario, load_scenario  # noqa: E402
from halp.serving import policy_for  # noqa: E402
from halp.trace import Trace, TraceWriter  # noqa: E402

METHODS = ("standalone", "modnn", "halp")
PUBLISHED = 1.7


def busy(trace: Trace, request: int) -> dict[str, float]:
    """Seconds each resource (device or link) is busy in one request."""
    out: dict[str, float] = {}
    for op in trace.ops:
        if op.request == request and op.kind != "input":
            out[op.resource] = out.get(op.resource, 0.0) + op.duration
    return out


def critical_path(trace: Trace, request: int) -> list[tuple[str, str, float]]:
    """The chain of ops that ends last: walk back from the last op through whichever op
    ended last before each one started (op, resource, duration)."""
    ops = sorted((op for op in trace.ops if op.request == request and op.kind != "input"),
                 key=lambda op: op.end)
    chain = []
    current = ops[-1] if ops else None
    while current is not None:
        chain.append((current.op, current.resource, current.duration))
        before = [op for op in ops if op.end <= current.start + 1e-4 and op is not current]
        current = before[-1] if before else None
    return list(reversed(chain))


def explain(trace: Trace, latency_s: float) -> list[str]:
    request = trace.requests[-1].request
    lines = ["where HALP's time goes (last request):"]
    for resource, seconds in sorted(busy(trace, request).items(), key=lambda kv: -kv[1]):
        lines.append(f"  {resource:<12} busy {seconds * 1e3:8.1f} ms = {seconds / latency_s:5.0%} "
                     "of the latency")
    chain = critical_path(trace, request)
    compute = sum(d for _, r, d in chain if "->" not in r and r != "channel")
    moving = sum(d for _, r, d in chain if "->" in r or r == "channel")
    lines.append(f"  longest chain: {len(chain)} ops, {compute * 1e3:.0f} ms computing and "
                 f"{moving * 1e3:.0f} ms transferring, of {latency_s * 1e3:.0f} ms")
    return lines


def predicted(scenario: Scenario) -> float:
    with TraceWriter(None, "sim", scenario.method.name) as writer:
        trace = load_backend("sim").run(scenario, policy_for(scenario), writer)
    return statistics.fmean(trace.latencies())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", nargs="?", default=str(REPO / "scenarios" / "emu_vgg16_3dev.yaml"))
    parser.add_argument("--rounds", type=int, default=3,
                        help="times each method is served, methods in turn (default 3)")
    parser.add_argument("--requests", type=int, default=2, help="per method and round (default 2)")
    parser.add_argument("--interval", default="7s", help="between requests (default 7s)")
    args = parser.parse_args(argv)
    try:
        # Far enough apart that no request waits for the one before (MoDNN takes seconds).
        base = load_scenario(args.scenario).with_values(
            {"workload.requests": args.requests, "workload.arrival": "periodic",
             "workload.interval": args.interval})
        variants = {m: base.with_values({"method.name": m}) for m in METHODS}
        # The "predicted" column means something only if the profile describes this machine.
        for line in check_profiles((d.profile for d in base.cluster().devices),
                                   probe_in_quota=quota_runner("emu").probe_limited)[1]:
            print(line, file=sys.stderr)
        rounds: list[dict[str, Trace]] = []
        with tempfile.TemporaryDirectory(prefix="halp-speedup-") as tmp:
            halp = variants["halp"]
            run = EmulatedRun(variants["standalone"], Path(tmp), log=lambda line: None,
                              devices=devices_of(halp, lambda line: None, policy_for(halp)))
            with run.serving() as net:
                for r in range(args.rounds):
                    rounds.append({})
                    for method, scenario in variants.items():
                        print(f"round {r + 1}/{args.rounds}: {method} ...", file=sys.stderr, flush=True)
                        rounds[-1][method] = run.serve(net, scenario, policy_for(scenario),
                                                       f"{method}-{r}")
    except HalpError as exc:
        print(f"emu_speedup: {exc}", file=sys.stderr)
        return 2
    devices = ", ".join(f"{d.name} {d.slowdown:.3g}x slower than a core"
                        for d in run.devices.devices)
    print(f"{base.model.name} on {len(base.devices)} emulated devices ({devices}), "
          f"{base.network.kind} {base.network.bandwidth / 1e6:g} Mbps; {args.rounds} rounds of "
          f"{args.requests} requests per method, methods in turn")
    print(f"{'method':<11} {'median':>9} {'(min-max)':>13} {'predicted':>10} {'speed-up':>9} "
          f"{'exact':>6}")
    latencies = {m: [x for rnd in rounds for x in rnd[m].latencies()] for m in METHODS}
    median = {m: statistics.median(v) for m, v in latencies.items()}
    for method in METHODS:
        exact = all((r.extra or {}).get("relative_error", 0.0) <= 1e-4
                    for rnd in rounds for r in rnd[method].requests)
        values = latencies[method]
        spread = f"({min(values) * 1e3:.0f}-{max(values) * 1e3:.0f})"
        print(f"{method:<11} {median[method] * 1e3:6.0f} ms {spread:>13} "
              f"{predicted(variants[method]) * 1e3:7.0f} ms "
              f"{median['standalone'] / median[method]:8.2f}x {'yes' if exact else 'NO':>6}")
    # Stand-alone and HALP served one after the other: the ratio within each round.
    per_round = [statistics.median(rnd["standalone"].latencies())
                 / statistics.median(rnd["halp"].latencies()) for rnd in rounds]
    print("HALP speed-up per round: " + ", ".join(f"{x:.2f}x" for x in per_round))
    print(f"published HALP prototype: {PUBLISHED}x on three Raspberry Pis; here "
          f"{median['standalone'] / median['halp']:.2f}x (medians)")
    last = rounds[-1]["halp"]
    for line in explain(last, last.latencies()[-1]):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
