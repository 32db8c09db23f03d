"""`halp train SCENARIO --out policies/NAME.pt [--generations N] [--mode erl] [--json]`.

Trains a split policy by evolutionary reinforcement learning in the simulator's environment
(`sim.env`, `learning.train`), as the scenario's `learning` section says, and writes the policy file
(`halp.methods.erl.PolicyFile`) with its learning curve beside it: NAME.csv and NAME.png
(latency on held-out states against simulator runs), and NAME.json (how it was trained, and the
digests of the device profiles it holds for). Progress goes to stderr as plain text.
`--mode learner` and `--mode ga` train the ablations (the gradient learner alone, the genetic
algorithm alone). A scenario then uses the policy as `method: {name: erl, policy: FILE}`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from halp.cli.common import add_scenario, print_json, scenario_from_args
from halp.errors import ScenarioError
from halp.outdirs import below
from halp.scenario import Scenario, parse_override, parse_scenario, read_scenario_yaml


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a split policy (ERL) in the simulator")
    add_scenario(p)
    p.add_argument("--out", type=Path, help="policy file to write (default policies/<name>.pt)")
    p.add_argument("--generations", type=int, help="override learning.generations")
    p.add_argument("--mode", default="erl", choices=["erl", "learner", "ga"],
                   help="erl (default), or an ablation: the gradient learner or the GA alone")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def training_scenario(args: argparse.Namespace) -> Scenario:
    """The scenario to train on. Training ignores the method, so a scenario whose erl policy
    is the very file about to be trained loads with method halp instead."""
    try:
        return scenario_from_args(args)
    except ScenarioError as exc:
        if "method.policy" not in str(exc):
            raise
    path = Path(args.scenario)
    data = read_scenario_yaml(path)
    data["method"] = {"name": "halp"}
    scenario = parse_scenario(data, source=str(path), base_dir=str(path.resolve().parent))
    overrides = dict(parse_override(t) for t in args.overrides or [])
    return scenario.with_values(overrides) if overrides else scenario


class Progress:
    """A text progress bar on stderr: redrawn in place on a terminal, a line a tenth otherwise."""

    def __init__(self, stream=None, width: int = 24):
        self.stream, self.width = stream or sys.stderr, width
        self.tty = self.stream.isatty()

    def __call__(self, point, total: int) -> None:
        g = point.generation
        done = int(self.width * g / total)
        line = (f"[{'#' * done}{'.' * (self.width - done)}] gen {g}/{total}  "
                f"sims {point.simulations}  champion {point.champion_latency_s * 1e3:.1f} ms  "
                f"best {point.best_latency_s * 1e3:.1f} ms  {point.seconds:.0f} s")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if g == total else ""))
        elif g == total or g % max(1, total // 10) == 0:
            self.stream.write(line + "\n")
        self.stream.flush()


def run(args: argparse.Namespace) -> int:
    from learning.baselines import equal, latencies
    from learning.train import curve_png, fingerprint, held_out, require_ray, train, write_curve
    from sim.env import Task

    scenario = training_scenario(args)
    if args.generations is not None:  # validated as learning.generations is, bounds included
        scenario = scenario.with_values({"learning.generations": args.generations})
    out: Path = args.out or below(Path("policies"), f"{scenario.name}.pt")
    if scenario.learning.ray:
        require_ray()
    task = Task.from_scenario(scenario)
    t0 = time.perf_counter()
    result = train(scenario, mode=args.mode, task=task,
                   progress=None if args.json else Progress())
    seconds = time.perf_counter() - t0
    result.policy.save(out)
    csv_path = write_curve(result.curve, out.with_suffix(".csv"))
    png_path = curve_png(result.curve, out.with_suffix(".png"),
                         f"{args.mode} on {scenario.name}: cuts {task.cuts}")
    last = result.curve[-1]
    states = held_out(task)
    equal_s = sum(latencies(task, equal(task), states)) / len(states)
    summary = {"policy": str(out), "curve_csv": str(csv_path), "curve_png": str(png_path),
               "mode": args.mode, "model": task.model, "devices": task.cluster.names,
               "cuts": task.cuts, "generations": last.generation, "simulations": last.simulations,
               "seconds": round(seconds, 2), "held_out_latency_s": last.best_latency_s,
               "equal_split_latency_s": equal_s}
    out.with_suffix(".json").write_text(json.dumps(
        {**summary, "scenario": scenario.name, "seed": scenario.seed,
         "learning": scenario.learning.model_dump(), "fingerprint": fingerprint(task)}, indent=2) + "\n")
    if args.json:
        print_json(summary)
    else:
        print(f"{args.mode} policy for {task.model} on {len(task.cluster.names)} devices, cuts "
              f"{task.cuts}: {last.best_latency_s * 1e3:.1f} ms on held-out states (equal split "
              f"{equal_s * 1e3:.1f} ms), {last.simulations} simulator runs in {seconds:.0f} s")
        print(f"wrote {out}, {csv_path}, {png_path}")
    return 0
