"""A trained ERL policy in the emulator, its measured speedup beside its simulated one.

Scenario `erl-vgg16-3dev` (VGG-16; pi1 twice as fast, pi2 half as fast as the host; pi2 on
40 Mbps). In the emulator a device's speed becomes its CPU share: a quarter of a core per unit
of speed, so pi0 gets 0.25, pi1 0.5 and pi2 0.125 of a core. Stand-alone, HALP and the ERL
policy (policies/erl-vgg16-3dev.pt) each serve the same few requests on the emulator and on the
simulator (one request on an idle cluster there); speedups are against stand-alone on the same
backend. The simulator uses the scenario's profiles (rpi4, fitted to published Pi 4 times), the
emulator this machine: compare the speedups, not the
milliseconds. Needs root and Mininet.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from halp.backends import load_backend  # noqa: E402
from halp.scenario import load_scenario  # noqa: E402
from halp.serving import policy_for  # noqa: E402
from halp.trace import TraceWriter  # noqa: E402

REQUESTS = 3
METHODS = [("standalone", {"name": "standalone"}), ("halp", {"name": "halp"}),
           ("erl", {"name": "erl", "policy": str(REPO / "policies" / "erl-vgg16-3dev.pt")})]


def main() -> int:
    base = load_scenario(REPO / "scenarios" / "erl-vgg16-3dev.yaml")
    shares = {d.name: 0.25 * d.speed for d in base.devices}
    changes = {f"devices.{name}.cpu_share": share for name, share in shares.items()}
    base = base.with_values(changes)
    workloads = {"sim": {"workload.requests": 1, "workload.arrival": "single"},
                 "emu": {"workload.requests": REQUESTS, "workload.interval": "3s"}}
    rows = {}
    for label, method in METHODS:
        for backend in ("sim", "emu"):
            scenario = base.with_values({"method": method, **workloads[backend]})
            trace = load_backend(backend).run(scenario, policy_for(scenario),
                                              TraceWriter(None, backend, label))
            rows[(label, backend)] = statistics.mean(trace.latencies())
    print(f"ERL policy in the emulator: VGG-16, 3 heterogeneous devices, CPU shares {shares}")
    print(f"{'method':<11} {'sim ms':>9} {'sim x':>6} {'emu ms':>9} {'emu x':>6}")
    for label, _ in METHODS:
        sim, emu = rows[(label, "sim")], rows[(label, "emu")]
        print(f"{label:<11} {sim * 1e3:>9.1f} {rows[('standalone', 'sim')] / sim:>6.2f} "
              f"{emu * 1e3:>9.1f} {rows[('standalone', 'emu')] / emu:>6.2f}")
    erl_sim = rows[("standalone", "sim")] / rows[("erl", "sim")]
    erl_emu = rows[("standalone", "emu")] / rows[("erl", "emu")]
    print(f"ERL speedup: simulated {erl_sim:.2f}x, measured in the emulator {erl_emu:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
