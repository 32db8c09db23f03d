"""`halp hw setup|check|profile SCENARIO`: prepare and inspect the devices of a hardware run.

    halp hw setup SCENARIO [--system-site-packages] [--force] [--wheel FILE] [--wheels DIR]
        install the project on every device over SSH (a wheel of this checkout, a venv in
        backends.hw.remote_dir, torch from the registry); says per device what it did, and
        does nothing the second time
    halp hw check SCENARIO [--json] [--rounds N] [--probe-bytes N]
        per device: reachable, Python, torch, model digest, clock offset to the host and a
        bandwidth sample between the host and each secondary; exit 1 when anything is wrong
    halp hw profile SCENARIO DEVICE [--name NAME] [--out FILE] [--quick] [--model M] ...
        run `halp profile` on the device (with its threads) and copy profiles/NAME.yaml back

Runs themselves are `halp run SCENARIO --backend hw` and `halp validate SCENARIO --against hw`.
Device keys are checked against ~/.ssh/known_hosts (or the file in $HALP_HW_KNOWN_HOSTS).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from halp.cli.common import add_scenario, print_json, scenario_from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hw", help="set up, check and profile the devices of a hardware run")
    hw = p.add_subparsers(dest="hw_command", required=True, metavar="ACTION")

    s = hw.add_parser("setup", help="install the project on every device over SSH")
    add_scenario(s)
    s.add_argument("--system-site-packages", action="store_true",
                   help="make the device venv see the system's packages (e.g. a torch from apt)")
    s.add_argument("--force", action="store_true", help="reinstall halp even if up to date")
    s.add_argument("--wheel", type=Path, metavar="FILE",
                   help="install this wheel instead of building one from this checkout")
    s.add_argument("--wheels", type=Path, metavar="DIR",
                   help="a folder of wheels (torch and the other dependencies, for the devices' "
                        "architecture) to install from instead of the package index: for "
                        "devices without internet")
    s.set_defaults(func=run_setup)

    c = hw.add_parser("check", help="reachability, versions, model digest, clocks, bandwidth")
    add_scenario(c)
    c.add_argument("--json", action="store_true", help="print the results as JSON")
    c.add_argument("--rounds", type=int, default=16, help="clock ping-pong rounds (default 16)")
    c.add_argument("--probe-bytes", type=int, default=2_000_000,
                   help="bytes sent each way in the bandwidth sample (default 2000000)")
    c.set_defaults(func=run_check)

    f = hw.add_parser("profile", help="measure a device's latency profile on the device")
    add_scenario(f)
    f.add_argument("device", help="the device's name in the scenario")
    f.add_argument("--name", help="profile name (default: the device's profile name)")
    f.add_argument("--out", type=Path, help="where to write it (default profiles/NAME.yaml)")
    # Passed on to `halp profile` on the device (see `halp profile --help`).
    f.add_argument("--model", help="zoo models to time, e.g. vgg16,mobilenet_v1")
    f.add_argument("--width", help="MobileNet-V1 widths, e.g. 1.0,0.5,0.25")
    f.add_argument("--resolution", help="MobileNet-V1 resolutions, e.g. 224,128")
    f.add_argument("--repeats", type=int, help="timed calls per op, median kept")
    f.add_argument("--max-run", type=int, help="longest fused run timed, in segments")
    f.add_argument("--quick", action="store_true", help="a rough profile in well under a minute")
    f.set_defaults(func=run_profile)


def run_setup(args: argparse.Namespace) -> int:
    from hw.install import setup

    scenario = scenario_from_args(args)
    outcomes = setup(scenario, system_site_packages=args.system_site_packages, force=args.force,
                     wheel=args.wheel, wheels=args.wheels)
    for outcome in outcomes:
        print(outcome.line())
    return 1 if any(o.error for o in outcomes) else 0


def run_check(args: argparse.Namespace) -> int:
    from hw.check import check, format_table

    scenario = scenario_from_args(args)
    results = check(scenario, rounds=max(1, args.rounds), probe_bytes=max(1, args.probe_bytes))
    if args.json:
        print_json(results)
    else:
        for line in format_table(results):
            print(line)
    bad = [r["device"] for r in results if r["problems"]]
    if not args.json:
        print(f"{len(results) - len(bad)} of {len(results)} devices ready"
              + (f"; look at {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


def run_profile(args: argparse.Namespace) -> int:
    from hw.profile import profile

    scenario = scenario_from_args(args)
    extra: list[str] = []
    for flag in ("model", "width", "resolution", "repeats", "max_run"):
        value = getattr(args, flag)
        if value is not None:
            extra += [f"--{flag.replace('_', '-')}", str(value)]
    if args.quick:
        extra.append("--quick")
    out = profile(scenario, args.device, name=args.name, out=args.out, extra=extra)
    print(f"wrote {out}")
    return 0
