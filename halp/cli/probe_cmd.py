"""`halp probe`: how fast this machine runs the probe layers now (`halp.latency.probe`).

    halp probe [--threads N] [--emu-cpu-share S] [--json]

Seconds per call of four fixed layers, at full speed, or with `--emu-cpu-share S` inside one
host of the emulator held to S of a core, timed as `halp profile --emu-cpu-share` times ops
there. Set beside a profile's `probe` or `quota_probe`, it says whether that profile still
describes this machine (`halp validate --against emu` does this itself).
"""

from __future__ import annotations

import argparse
import json

from halp.errors import HalpError
from halp.latency.probe import LAYERS, probe_machine


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="time the probe layers on this machine (full speed or in a CPU quota)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    p.add_argument("--emu-cpu-share", type=float, metavar="S",
                   help="probe inside an emulated host limited to S of a core (root, Mininet)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    # Set on the command run inside the CPU-limited host: time calls by CPU over the share.
    p.add_argument("--cpu-share", type=float, default=1.0, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.threads < 1:
        raise HalpError(f"--threads must be at least 1, got {args.threads}")
    share = args.emu_cpu_share if args.emu_cpu_share is not None else args.cpu_share
    if not 0 < share <= 1:
        raise HalpError(f"--emu-cpu-share {share:g}: give a share of one core, in (0, 1]")
    if share < 1 and args.threads != 1:
        raise HalpError("inside a CPU quota the probe times one thread's CPU: use --threads 1")
    if args.emu_cpu_share is not None and share < 1:
        from halp.backends import quota_runner

        seconds = quota_runner("emu").probe_limited(share, args.threads)
    else:
        seconds = probe_machine(threads=args.threads, cpu_share=share)
    if args.json:
        print(json.dumps(seconds))
    else:
        where = f"inside a CPU quota of {share:g} of a core" if share < 1 else "at full speed"
        print(f"probe, {args.threads} thread(s), {where}:")
        for name in LAYERS:
            print(f"  {name:<10} {seconds[name] * 1e3:8.3f} ms")
    return 0
