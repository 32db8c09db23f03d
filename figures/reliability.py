"""Service reliability and accuracy against the deadline, with and without model selection.

Four configurations on scenarios/select-mobilenet.yaml (a Gilbert-Elliott channel): stand-alone
with the largest model, stand-alone with selection, HALP with the largest model, HALP with
selection. For each deadline: the share of requests that meet it (service reliability) and the
mean top-1 accuracy of the models served, simulated over `REQUESTS` requests per point; and,
when the emulator can run here (root and Mininet), a shorter emulated run on the same axes.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from _shared import OUT, SCENARIOS, save, write_rows  # noqa: E402

from halp.accuracy import top1  # noqa: E402
from halp.scenario import load_scenario  # noqa: E402
from halp.serving import policy_for  # noqa: E402
from halp.trace import TraceWriter  # noqa: E402
from sim import backend  # noqa: E402

REQUESTS = int(os.environ.get("HALP_FIGURE_REQUESTS", "1000"))
EMU_REQUESTS = int(os.environ.get("HALP_FIGURE_EMU_REQUESTS", "0"))  # 0: no emulated points
DEADLINES_MS = [20, 40, 60, 80, 100, 130, 160, 200, 300]
CONFIGS = [  # label, method config, colour, line style
    ("stand-alone, largest model", {"name": "standalone"}, "#7f7f7f", "--"),
    ("stand-alone + selection", {"name": "select", "base": "standalone"}, "#7f7f7f", "-"),
    ("HALP, largest model", {"name": "halp"}, "#d62728", "--"),
    ("HALP + selection", {"name": "select", "base": "halp"}, "#d62728", "-"),
]


def points(backend_name: str, requests: int) -> list[dict]:
    base = load_scenario(SCENARIOS / "select-mobilenet.yaml")
    rows = []
    for label, method, _, _ in CONFIGS:
        scenario = base.with_values({"method": {**method, "horizon": "5s"} if method["name"] == "select"
                                     else method, "workload.requests": requests})
        policy = policy_for(scenario)  # built once: the deadline only changes the choice
        for deadline_ms in DEADLINES_MS:
            if hasattr(policy, "deadline_s"):
                policy.deadline_s = deadline_ms / 1e3
            run = scenario.with_values({"workload.deadline": f"{deadline_ms}ms"})
            if backend_name == "sim":
                trace = backend.run(run, policy, TraceWriter(None, "sim", method["name"]))
            else:
                from halp.backends import load_backend

                trace = load_backend(backend_name).run(run, policy, TraceWriter(None, backend_name,
                                                                               method["name"]))
            met = [r.met for r in trace.requests]
            accuracy = [r.top1 if r.top1 is not None else top1(r.model) for r in trace.requests]
            rows.append({"backend": backend_name, "config": label, "deadline_ms": deadline_ms,
                         "requests": len(met), "reliability": sum(met) / len(met),
                         "mean_top1": sum(accuracy) / len(accuracy)})
    return rows


def main(out_dir: Path = OUT) -> list[Path]:
    rows = points("sim", REQUESTS)
    if EMU_REQUESTS:
        rows += points("emu", EMU_REQUESTS)
    table = write_rows(rows, out_dir / "reliability.csv")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, _, colour, style in CONFIGS:
        for backend_name, marker in (("sim", ""), ("emu", "o")):
            mine = [r for r in rows if r["config"] == label and r["backend"] == backend_name]
            if not mine:
                continue
            x = [r["deadline_ms"] for r in mine]
            name = label if backend_name == "sim" else f"{label} (emulated)"
            left.plot(x, [100 * r["reliability"] for r in mine], style, marker=marker, color=colour, label=name)
            right.plot(x, [r["mean_top1"] for r in mine], style, marker=marker, color=colour, label=name)
    left.set(xlabel="deadline (ms)", ylabel="service reliability (%)", ylim=(-2, 102))
    right.set(xlabel="deadline (ms)", ylabel="mean top-1 accuracy (%)")
    left.legend(fontsize=7)
    left.grid(alpha=0.3)
    right.grid(alpha=0.3)
    fig.suptitle(f"MobileNet-V1 on three devices, Gilbert-Elliott channel, {REQUESTS} requests per point")
    return [save(fig, out_dir, "reliability"), table]
