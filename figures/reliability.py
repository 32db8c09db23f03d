"""Service reliability and accuracy against the deadline, with and without model selection.

Four configurations: stand-alone with the largest model, stand-alone with selection, HALP with
the largest model, HALP with selection. For each deadline: the share of requests that meet it
(service reliability) and the mean top-1 accuracy of the models served.

- `reliability.png`: scenarios/select-mobilenet.yaml (three Pi 4, profile rpi4, a Gilbert-Elliott
  channel), simulated over `HALP_FIGURE_REQUESTS` requests per point (1,000 by default).
- `reliability_emu.png`, when `HALP_FIGURE_EMU_REQUESTS=N` is set (root and Mininet):
  scenarios/select-mobilenet-emu.yaml (two devices a quarter as fast as this machine's core,
  dilated on a core each) simulated as above and emulated over N requests per point, on the
  same axes. One emulated
  network and one set of workers serve every point; a configuration whose plan does not depend
  on the deadline (the largest model) is run once and read at every deadline.
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from _shared import OUT, SCENARIOS, save, write_rows

from halp.accuracy import top1
from halp.methods.select import SelectPolicy
from halp.policy import Policy
from halp.scenario import Scenario, load_scenario
from halp.serving import policy_for
from halp.trace import RequestRecord, Trace, TraceWriter
from sim.backend import BACKEND as simulator

REQUESTS = int(os.environ.get("HALP_FIGURE_REQUESTS", "1000"))
EMU_REQUESTS = int(os.environ.get("HALP_FIGURE_EMU_REQUESTS", "0"))  # 0: no emulated points
DEADLINES_MS = {"select-mobilenet": [20, 40, 60, 80, 100, 130, 160, 200, 300],
                "select-mobilenet-emu": [20, 30, 40, 50, 60, 70, 85]}
CONFIGS = [  # label, method config, colour, line style
    ("stand-alone, largest model", {"name": "standalone"}, "#7f7f7f", "--"),
    ("stand-alone + selection", {"name": "select", "base": "standalone"}, "#7f7f7f", "-"),
    ("HALP, largest model", {"name": "halp"}, "#d62728", "--"),
    ("HALP + selection", {"name": "select", "base": "halp"}, "#d62728", "-"),
]

Serve = Callable[[Scenario, str], Trace]  # (scenario with its deadline, config label) -> trace


def points(name: str, backend_name: str, requests: int, serve: Serve) -> list[dict]:
    """One row per configuration and deadline of scenario `name`."""
    base = load_scenario(SCENARIOS / f"{name}.yaml").with_values({"workload.requests": requests})
    deadlines = DEADLINES_MS[name]
    rows = []
    for label, method, _, _ in CONFIGS:
        if method["name"] == "select" and base.method.name == "select":
            method = {**base.method.model_dump(exclude_none=True), **method}  # its window, horizon
        scenario = base.with_values({"method": method})
        selects = method["name"] == "select"
        trace = None
        for deadline_ms in deadlines:
            if trace is None or selects:  # the largest model's plan ignores the deadline
                trace = serve(scenario.with_values({"workload.deadline": f"{deadline_ms}ms"}), label)
            latencies = trace.latencies()
            met = [latency <= deadline_ms / 1e3 for latency in latencies]
            accuracy = [accuracy_of(r) for r in trace.requests]
            rows.append({"scenario": name, "backend": backend_name, "config": label,
                         "deadline_ms": deadline_ms, "requests": len(met),
                         "reliability": sum(met) / len(met),
                         "mean_top1": sum(accuracy) / len(accuracy)})
    return rows


def accuracy_of(record: RequestRecord) -> float:
    """The top-1 accuracy of the model a request was served with."""
    accuracy = record.top1 if record.top1 is not None else top1(record.model)
    if accuracy is None:
        raise ValueError(f"no top-1 accuracy known for {record.model}")
    return accuracy


def simulated(name: str, requests: int) -> list[dict]:
    policies: dict[str, Policy] = {}

    def serve(scenario: Scenario, label: str) -> Trace:
        if label not in policies:  # built once per configuration: the deadline only changes the choice
            policies[label] = policy_for(scenario)
        policy = policies[label]
        if isinstance(policy, SelectPolicy):
            policy.deadline_s = scenario.workload.deadline
        return simulator.run(scenario, policy, TraceWriter(None, "sim", scenario.method.name))

    return points(name, "sim", requests, serve)


def emulated(name: str, requests: int) -> list[dict]:
    from emu.backend import EmulatedRun, devices_of

    base = load_scenario(SCENARIOS / f"{name}.yaml")
    names = (f"point{i}" for i in itertools.count(1))
    with tempfile.TemporaryDirectory(prefix="halp-reliability-") as tmp:
        # Every point runs on one network: its devices are weighed by the work of the widest
        # policy (selection over HALP plans of every variant).
        run = EmulatedRun(base, Path(tmp), log=_said,
                          devices=devices_of(base, _said, policy_for(base)))
        with run.serving() as net:
            def serve(scenario: Scenario, label: str) -> Trace:
                deadline_ms = 1e3 * (scenario.workload.deadline or 0.0)
                print(f"reliability: emulating {label}, deadline {deadline_ms:g} ms ...",
                      file=sys.stderr, flush=True)
                return run.serve(net, scenario, policy_for(scenario), next(names))

            return points(name, "emu", requests, serve)


def _said(line: str) -> None:
    """The emulator's lines about its devices (which CPU model, how fast), not its chatter."""
    if line.startswith(("cpu model", "note:", "warning:")):
        print(f"reliability: {line}", file=sys.stderr, flush=True)


def draw(rows: list[dict], title: str, out_dir: Path, stem: str) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, _, colour, style in CONFIGS:
        for backend_name, marker in (("sim", ""), ("emu", "o")):
            mine = [r for r in rows if r["config"] == label and r["backend"] == backend_name]
            if not mine:
                continue
            x = [r["deadline_ms"] for r in mine]
            name = label if backend_name == "sim" else f"{label} (emulated, {mine[0]['requests']} req.)"
            left.plot(x, [100 * r["reliability"] for r in mine], style, marker=marker, color=colour, label=name)
            right.plot(x, [r["mean_top1"] for r in mine], style, marker=marker, color=colour, label=name)
    left.set(xlabel="deadline (ms)", ylabel="service reliability (%)", ylim=(-2, 102))
    right.set(xlabel="deadline (ms)", ylabel="mean top-1 accuracy (%)")
    left.legend(fontsize=7)
    left.grid(alpha=0.3)
    right.grid(alpha=0.3)
    fig.suptitle("\n".join(textwrap.wrap(title, 100)))
    return save(fig, out_dir, stem)


def main(out_dir: Path = OUT) -> list[Path]:
    rows = simulated("select-mobilenet", REQUESTS)
    paths = [draw(rows, "MobileNet-V1 on three Pi 4 (rpi4: fitted to published times), "
                        f"Gilbert-Elliott channel, {REQUESTS} simulated requests per point",
                  out_dir, "reliability")]
    if EMU_REQUESTS:
        emu_rows = simulated("select-mobilenet-emu", REQUESTS) + emulated("select-mobilenet-emu",
                                                                          EMU_REQUESTS)
        paths.append(draw(emu_rows, "MobileNet-V1 on two dilated devices (a quarter of this machine's "
                          f"core), Gilbert-Elliott channel: simulated ({REQUESTS} req.) and "
                          f"emulated ({EMU_REQUESTS} req.)",
                          out_dir, "reliability_emu"))
        rows += emu_rows
    return [*paths, write_rows(rows, out_dir / "reliability.csv")]
