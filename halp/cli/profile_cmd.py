"""`halp profile`: measure this machine and write its latency profile.

    halp profile --model vgg16,mobilenet_v1 --out profiles/NAME.yaml [--width 1.0,0.5,0.25]
                 [--resolution 224,128] [--threads 1] [--repeats 5] [--quick]

`--model` names zoo models: vgg16, mobilenet_v1, resnet18, resnet34, resnet50, mobilenet_v2,
googlenet (the last five at 224 x 224; their blocks' merges, adds and channel concatenations,
get coefficients of their own). MobileNet-V1 is measured at every pair of the given widths and
resolutions. The profile says
where and how it was measured (CPU, threads, date, torch, host, this command), and how well it
predicts fused runs it was not fitted on (`held_out_mape`, in percent).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

from halp.errors import HalpError
from halp.latency.ops import DEFAULT_HEIGHTS
from halp.latency.profile_io import write_profile
from halp.latency.profiler import measure_profile
from halp.model.zoo import MOBILENET_RESOLUTIONS, MOBILENET_WIDTHS, TORCHVISION_MODELS, ModelSpec

# The zoo models a profile is measured on (a custom model's factory is the scenario's business).
PROFILE_MODELS = ("vgg16", "mobilenet_v1", *TORCHVISION_MODELS)
DEFAULT_WIDTHS = (1.0, 0.5, 0.25)
DEFAULT_RESOLUTIONS = (224, 128)
QUICK: dict[str, Any] = {"heights": (1.0, 1 / 4), "repeats": 3, "max_run": 2, "widths": (1.0, 0.25),
         "resolutions": (128,)}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="measure this machine's layer latencies and write a profile")
    p.add_argument("--model", default="vgg16,mobilenet_v1",
                   help=f"comma-separated zoo models to time, of {', '.join(PROFILE_MODELS)} "
                        "(default: vgg16,mobilenet_v1)")
    p.add_argument("--width", help="MobileNet-V1 widths, comma-separated (default: 1.0,0.5,0.25)")
    p.add_argument("--resolution", help="MobileNet-V1 resolutions, comma-separated (default: 224,128)")
    p.add_argument("--out", required=True, help="profile file to write, e.g. profiles/my-laptop.yaml")
    p.add_argument("--name", help="profile name (default: the file name without .yaml)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    p.add_argument("--repeats", type=int, help="clean timed calls per op (default: 5; 3 with --quick)")
    p.add_argument("--max-run", type=int, help="longest fused run timed, in conv/pool segments (default: 4)")
    p.add_argument("--seed", type=int, default=0, help="slice positions and the held-out split")
    p.add_argument("--statistic", choices=("min", "median", "mean"), default=None,
                   help="an op's time from its clean calls (default: min; under --emu-cpu-share, "
                        "mean of every call's CPU time / share; see halp.latency.timing)")
    p.add_argument("--quick", action="store_true",
                   help="fewer ops, slices and repeats: a rough profile in well under a minute")
    p.add_argument("--emu-cpu-share", type=float, metavar="S",
                   help="profile under the emulator's CPU limit S (share of one core)")
    derive = p.add_argument_group("deriving a profile for a device that is not here (no measurement)")
    derive.add_argument("--derive-from", metavar="PROFILE",
                        help="scale this measured profile instead of measuring, e.g. this-machine")
    derive.add_argument("--published", metavar="FILE",
                        help="fit the scales to published stand-alone times (a YAML of figures and "
                             "their sources, e.g. profiles/published/rpi4.yaml), for --threads")
    derive.add_argument("--vgg16-s", type=float, metavar="SECONDS",
                        help="assumed single-inference VGG-16 time on the target device; sets the "
                             "scale of the FLOP and byte terms")
    derive.add_argument("--overhead-scale", type=float, default=1.0, metavar="X",
                        help="how many times slower the fixed costs are (per layer, op, message)")
    derive.add_argument("--copy-scale", type=float, default=1.0, metavar="X",
                        help="how many times slower a byte of gather (torch.cat) is")
    derive.add_argument("--assumption", default="", help="the stated assumption, kept in provenance")
    # Set by --emu-cpu-share on the command it runs inside the CPU-limited host (provenance).
    p.add_argument("--cpu-share", type=float, default=1.0, help=argparse.SUPPRESS)
    # ... and the machine's probe, which only a process outside the quota can measure.
    p.add_argument("--machine-probe", type=_probe_arg, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.statistic is None:  # under a CPU quota: the expected CPU, throttling's cost included
        limited = args.emu_cpu_share is not None or args.cpu_share != 1.0
        args.statistic = "mean" if limited else "min"
    if args.derive_from and args.published:
        return _derive_published(args)
    if args.derive_from:
        return _derive(args)
    if args.emu_cpu_share is not None:
        return _in_emulator(args)
    if args.threads < 1:
        raise HalpError(f"--threads must be at least 1, got {args.threads}")
    out = Path(args.out)
    if out.suffix not in (".yaml", ".yml"):
        raise HalpError(f"--out {out}: a profile is a .yaml file")
    quick = bool(args.quick)
    widths = _numbers(args.width, float, "--width") or (QUICK["widths"] if quick else DEFAULT_WIDTHS)
    resolutions = (_numbers(args.resolution, int, "--resolution")
                   or (QUICK["resolutions"] if quick else DEFAULT_RESOLUTIONS))
    for w in widths:
        if w not in MOBILENET_WIDTHS:
            raise HalpError(f"--width {w:g}: MobileNet-V1 widths are {', '.join(map(str, MOBILENET_WIDTHS))}")
    for r in resolutions:
        if r not in MOBILENET_RESOLUTIONS:
            raise HalpError(f"--resolution {r}: MobileNet-V1 resolutions are "
                            f"{', '.join(map(str, MOBILENET_RESOLUTIONS))}")
    models = model_specs(args.model, widths, resolutions)
    repeats = args.repeats if args.repeats is not None else (QUICK["repeats"] if quick else 5)
    max_run = args.max_run if args.max_run is not None else (QUICK["max_run"] if quick else 4)
    if repeats < 1 or max_run < 1:
        raise HalpError("--repeats and --max-run must be at least 1")
    heights = QUICK["heights"] if quick else DEFAULT_HEIGHTS
    began = time.perf_counter()
    print(f"profiling {', '.join(m.variant for m in models)} with {args.threads} thread(s), "
          f"{repeats} repeats ...", file=sys.stderr)
    profile = measure_profile(
        models, args.name or out.stem, heights=heights, repeats=repeats, threads=args.threads,
        max_run=max_run, cpu_share=args.cpu_share, seed=args.seed, statistic=args.statistic,
        command=_command(args, models, repeats, max_run), probe=args.machine_probe,
        progress=lambda message: print(f"  {message}", file=sys.stderr, flush=True),
    )
    write_profile(profile, out)
    print(f"wrote {out}: {profile.provenance.get('samples')} ops in {time.perf_counter() - began:.0f} s, "
          f"held-out MAPE {profile.held_out_mape}%")
    return 0


def _derive(args: argparse.Namespace) -> int:
    """Write a profile scaled from a measured one (`halp.latency.derive.derive_for_vgg16`)."""
    from halp.latency.derive import DERIVED_HEADER, derive_for_vgg16, vgg16_seconds
    from halp.latency.profile import load_profile

    if args.vgg16_s is None or args.vgg16_s <= 0:
        raise HalpError("--derive-from needs --vgg16-s SECONDS: the target's assumed VGG-16 time")
    out = Path(args.out)
    base = load_profile(args.derive_from)
    command = (f"halp profile --derive-from {args.derive_from} --vgg16-s {args.vgg16_s:g} "
               f"--overhead-scale {args.overhead_scale:g} --copy-scale {args.copy_scale:g} "
               f"--out {args.out}" + (" --assumption '...'" if args.assumption else ""))
    derived = derive_for_vgg16(
        base, args.name or out.stem, vgg16_s=args.vgg16_s, overhead_scale=args.overhead_scale,
        copy_scale=args.copy_scale,
        provenance={"assumption": args.assumption, "date": datetime.date.today().isoformat(),
                    "vgg16_s_assumed": args.vgg16_s, "command": command,
                    "replace_with": "halp hw profile on the device itself"})
    profile, total, compute_scale = derived.profile, derived.base_vgg16_s, derived.compute_scale
    write_profile(profile, out, header=DERIVED_HEADER)
    check = vgg16_seconds(profile)
    print(f"wrote {out}: derived from {base.name} ({total:.3f} s VGG-16 there), x{compute_scale:.1f} on "
          f"FLOP and byte terms, x{args.overhead_scale:g} on fixed costs; VGG-16 predicted {check:.2f} s")
    return 0


def _derive_published(args: argparse.Namespace) -> int:
    """Write a profile fitted to published stand-alone times
    (`halp.latency.derive.derive_from_published`), with the file's power model."""
    import dataclasses

    from halp.latency.derive import PUBLISHED_HEADER, derive_from_published, read_published
    from halp.latency.profile import load_profile, power_from_dict

    if args.vgg16_s is not None:
        raise HalpError("--published sets the scales from its figures: drop --vgg16-s")
    out = Path(args.out)
    base = load_profile(args.derive_from)
    published = read_published(args.published)
    command = (f"halp profile --derive-from {args.derive_from} --published {args.published} "
               f"--threads {args.threads} --out {args.out}")
    fit = derive_from_published(
        base, args.name or out.stem, published, threads=args.threads, where=args.published,
        provenance={"published": args.published, "date": datetime.date.today().isoformat(),
                    "command": command, "replace_with": "halp hw profile on the device itself"})
    profile = fit.profile
    power = published.get("power")
    if power is not None:
        sources = power.get("sources") if isinstance(power, dict) else None
        provenance = {**profile.provenance, "power": sources}
        model = power_from_dict(power.get("values") if isinstance(power, dict) else None,
                                provenance, f"{args.published}: power")
        profile = dataclasses.replace(profile, provenance=provenance, power=model)
    write_profile(profile, out, header=PUBLISHED_HEADER)
    print(f"wrote {out}: derived from {base.name} for {args.threads} thread(s), compute scales "
          + ", ".join(f"{g} x{s:g}" for g, s in profile.provenance["compute_scale_by_group"].items()))
    for row in fit.rows:
        print(f"  {'fitted  ' if row['fitted'] else 'held out'} {row['figure']:<22} published "
              f"{row['published_s'] * 1000:8.1f} ms  predicted {row['predicted_s'] * 1000:8.1f} ms  "
              f"{row['error_pct']:+6.1f}%")
    return 0


def _in_emulator(args: argparse.Namespace) -> int:
    """Run this same command inside one Mininet host limited to `--emu-cpu-share` of a core."""
    from halp.backends import quota_runner
    from halp.latency.probe import probe_machine

    inner = ["profile", "--model", args.model, "--out", str(Path(args.out).resolve()),
             "--name", args.name or Path(args.out).stem, "--threads", str(args.threads),
             "--seed", str(args.seed), "--statistic", args.statistic,
             "--cpu-share", f"{args.emu_cpu_share:g}",
             "--machine-probe", json.dumps(probe_machine(threads=args.threads))]
    for flag, value in (("--width", args.width), ("--resolution", args.resolution),
                        ("--repeats", args.repeats), ("--max-run", args.max_run)):
        if value is not None:
            inner += [flag, str(value)]
    if args.quick:
        inner.append("--quick")
    return quota_runner("emu").run_limited(inner, args.emu_cpu_share, threads=args.threads)


def model_specs(names: str, widths, resolutions) -> list[ModelSpec]:
    """The models `--model` names, each once, in its order (MobileNet-V1 at every width and
    resolution)."""
    specs: list[ModelSpec] = []
    for name in (n.strip() for n in names.split(",")):
        if not name:
            continue
        if name == "mobilenet_v1":
            specs += [ModelSpec(name, w, r) for w in widths for r in resolutions]
        elif name in PROFILE_MODELS:
            specs.append(ModelSpec(name))
        else:
            raise HalpError(f"--model {name[:40]!r}: profile with zoo models, "
                            f"{', '.join(PROFILE_MODELS[:-1])} or {PROFILE_MODELS[-1]}")
    if not specs:
        raise HalpError("--model: name at least one model, e.g. vgg16,mobilenet_v1")
    return list(dict.fromkeys(specs))


def _probe_arg(text: str) -> dict[str, float]:
    try:
        data = json.loads(text)
        return {str(k): float(v) for k, v in data.items()}
    except (ValueError, AttributeError, TypeError):
        raise argparse.ArgumentTypeError(f"not a JSON object of seconds: {text!r}") from None


def _numbers(text: str | None, kind, flag: str) -> tuple:
    if not text:
        return ()
    try:
        return tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise HalpError(f"{flag} {text!r}: give comma-separated numbers") from None


def _command(args: argparse.Namespace, models: list[ModelSpec], repeats: int, max_run: int) -> str:
    """The command line that reproduces this measurement, every default spelled out."""
    names = ",".join(dict.fromkeys(m.name for m in models))
    mobilenets = [m for m in models if m.name == "mobilenet_v1"]
    words = ["halp", "profile", "--model", names]
    if mobilenets:
        words += ["--width", ",".join(dict.fromkeys(f"{m.width:g}" for m in mobilenets)),
                  "--resolution", ",".join(dict.fromkeys(str(m.resolution) for m in mobilenets))]
    words += ["--out", str(args.out), "--threads", str(args.threads), "--repeats", str(repeats),
              "--max-run", str(max_run), "--seed", str(args.seed), "--statistic", args.statistic]
    if args.quick:
        words.append("--quick")
    if args.cpu_share != 1.0:
        words += ["--emu-cpu-share", f"{args.cpu_share:g}"]
    return " ".join(words)
