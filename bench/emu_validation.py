"""The simulator against the emulator on two dilated devices: the table of emu/README.md.

    sudo .venv/bin/python bench/emu_validation.py [--out DIR] [--models vgg16,mobilenet]

For each model (scenarios/emu_dilate_{vgg16,mobilenet}.yaml), network (star, shared) and method
(stand-alone, HALP, MoDNN), one `halp validate --against emu` run, as a user would type it
(MoDNN: 3 requests 6 s apart, else its requests queue). Prints one markdown row per run:
predicted and measured mean latency, the mean per-request error, the bias (median of measured
over predicted, less one) and the spread (the error left once the run is scaled by its bias),
then each device's slowdown as the emulator measured it. Every run's folder stays in --out.

Targets (issue 23): mean error at most 5% for VGG-16 and 10% for MobileNet-V1. About ten
minutes on a quiet machine; measure `this-machine` the same day first (`halp validate` warns
when the profile is stale).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = {"vgg16": ("VGG-16", 0.05), "mobilenet": ("MobileNet-V1", 0.10)}
METHODS = {"standalone": "stand-alone", "halp": "HALP", "modnn": "MoDNN"}
NETWORKS = ("star", "shared")


def validate(model: str, method: str, network: str, out: Path) -> tuple[dict, str]:
    """One `halp validate` run: its validation.json and its printed lines."""
    argv = [str(REPO / ".venv" / "bin" / "halp"), "validate",
            str(REPO / "scenarios" / f"emu_dilate_{model}.yaml"), "--against", "emu",
            "--set", f"method.name={method}", "--set", f"network.kind={network}",
            "--out", str(out)]
    if method == "modnn":
        argv += ["--set", "workload.requests=3", "--set", "workload.interval=6s"]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"emu_validation: {model} {method} {network}: "
                         f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return json.loads((out / "validation.json").read_text()), done.stdout + done.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="keep every run here (default: a temporary folder)")
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args(argv)
    models = args.models.split(",")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    base = Path(args.out or tempfile.mkdtemp(prefix="halp-emu-validation-"))
    print("| model | method | network | predicted | measured | error | bias | spread | slowdowns |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    missed = 0
    for model in models:
        name, target = MODELS[model]
        for network in NETWORKS:
            for method, label in METHODS.items():
                v, text = validate(model, method, network, base / f"{model}-{method}-{network}")
                slowdowns = " ".join(f"{d} {x}x" for d, x in
                                     re.findall(r"(\w+) ([\d.]+)x slower", text))
                error = v["latency_error_mean"]
                missed += error > target
                print(f"| {name} | {label} | {network} | "
                      f"{v['predicted_latency_mean_s'] * 1e3:.4g} ms | "
                      f"{v['measured_latency_mean_s'] * 1e3:.4g} ms | {error:.1%}"
                      f"{'' if error <= target else ' (over ' + format(target, '.0%') + ')'} | "
                      f"{v['latency_bias']:+.1%} | {v['latency_spread_mean']:.1%} | {slowdowns} |",
                      flush=True)
    print(f"runs in {base}; {missed} over target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
