"""`halp validate SCENARIO --against emu`: the simulator's prediction against a measured run.

Both backends serve the same workload with the same policy (the same plans); the traces join on
(request, op). Prints the per-request latency error and the op-duration MAPE per kind, and with
`--out` writes both traces, `validation.json` and `validation.png` (predicted against measured).

Against the emulator, the emulated devices are this machine held to a share, so each profile
is first checked against this machine's probe (`halp.latency.probe`), and a profile measured
under a CPU quota against the probe taken inside that quota now: a profile measured on another
machine, or on this one on a faster day, is named in one line before the run, and the
summary's `profiles` says, per profile, whether it describes this machine and by how much not.

`--calibrate` (emulator only) predicts for the machine as it is during the run rather than as
it was when profiled: the probe is taken again after the run, and each device is simulated at
its profile's speed divided by its slowdown (`halp.latency.probe.slowdown_of`, the geometric
mean of the probes before and after the run). Only the simulator's timing changes; the plans
are the policy's, as without it. The summary then holds `calibration` (per profile, the
slowdowns and the factor used) and `uncalibrated` (the errors without it): a quarter core of
this VM drifts by 10-20% within minutes, which no stored profile can predict.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from halp.backends import load_backend, quota_runner, ready_backend
from halp.cli.common import (
    add_scenario,
    print_json,
    scenario_from_args,
    warn_if_emulated_differently,
)
from halp.errors import HalpError
from halp.experiment import check_recorded_ops
from halp.latency.probe import check_profiles
from halp.serving import policy_for
from halp.trace import TraceWriter
from halp.validate import (
    ERROR_KEYS,
    calibrated,
    compare,
    dilated_devices,
    format_summary,
    scatter,
)

TARGET = 0.10  # mean per-request latency error the simulator should stay within


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="compare the simulator with a measured run of the same plans")
    add_scenario(p)
    p.add_argument("--against", choices=["emu", "hw"], default="emu",
                   help="the measuring backend (default: emu)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for both traces, validation.json and validation.png")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--calibrate", action="store_true",
                   help="simulate each device at the speed its probe finds before and after "
                        "the run, not the profile's (emulator only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    scenario = scenario_from_args(args)
    if args.calibrate and args.against != "emu":
        raise HalpError(f"--calibrate probes the devices' speed on this machine, so it needs "
                        f"--against emu, not {args.against}")
    measuring = ready_backend(args.against, scenario)  # one line, before anything is written
    simulator = load_backend("sim")
    policy = policy_for(scenario)
    check_recorded_ops(scenario, policy)
    cluster = scenario.cluster()
    profiles: dict[str, Any] = {}
    warnings: list[str] = []
    if args.against == "emu":  # the emulated devices are this machine: probed while idle
        probe_in_quota = quota_runner(args.against).probe_limited
        profiles, lines = check_profiles((d.profile for d in cluster.devices),
                                         probe_in_quota=probe_in_quota)
        warnings = warn_if_emulated_differently(scenario, args.against) + lines
        for line in lines:
            print(line, file=sys.stderr)
    out: Path | None = args.out
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "scenario.yaml").write_text(scenario.to_yaml())
    method = scenario.method.name
    with TraceWriter(out / args.against if out else None, args.against, method) as writer:
        measured = measuring.run(scenario, policy, writer)
    meta: dict[str, Any] = {}
    timed = scenario  # the devices as the simulator times them: the scenario's, or calibrated
    if args.calibrate:
        uncalibrated = compare(simulator.run(scenario, policy, TraceWriter(None, "sim", method)),
                               measured)
        after, _ = check_profiles((d.profile for d in cluster.devices),
                                  probe_in_quota=probe_in_quota)
        timed, meta["calibration"] = calibrated(scenario, profiles, after,
                                                dilated_devices(measured.meta))
        meta["uncalibrated"] = {k: v for k, v in uncalibrated.summary().items() if k in ERROR_KEYS}
    with TraceWriter(out / "sim" if out else None, "sim", method) as writer:
        predicted = simulator.run(timed, policy, writer)
    validation = compare(predicted, measured)
    warnings += measured.meta.get("cpu", {}).get("notes", [])
    validation.meta.update({"scenario": scenario.name, "method": method,
                            "against": args.against, "target": TARGET,
                            **({"profiles": profiles} if profiles else {}), **meta,
                            **({"warnings": warnings} if warnings else {})})
    summary = validation.summary()
    if out is not None:
        (out / "validation.json").write_text(json.dumps(summary, indent=2) + "\n")
        scatter(validation, out / "validation.png",
                title=f"{scenario.name}: simulator against {args.against}")
    if args.json:
        print_json(summary)
    else:
        print(format_summary(summary, TARGET))
        if out is not None:
            print(f"wrote {out / 'validation.json'} and {out / 'validation.png'}")
    return 0
