"""What the figure scripts share: where scenarios and outputs live, and simulated latencies.

Every figure simulates single requests on the simulator (`sim`), building each model once and
re-planning per variant of the scenario.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from halp.methods import Prepared, make_plan, prepare_reusing
from halp.scenario import Scenario, load_scenario, parse_scenario, read_scenario_yaml
from halp.serving import StaticPolicy
from halp.trace import Trace, TraceWriter
from sim.backend import BACKEND as simulator
from sim.engine import simulate

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "scenarios"
OUT = REPO / "figures" / "out"
METHODS = ["halp", "modnn", "deepthings", "equal", "offload", "standalone"]
COLOURS = {"halp": "#d62728", "modnn": "#1f77b4", "deepthings": "#2ca02c", "equal": "#9467bd",
           "offload": "#8c564b", "standalone": "#7f7f7f"}



def scenario(name: str, **changes: Any) -> Scenario:
    """A scenario of scenarios/ with dotted changes, as one request arriving alone."""
    base = load_scenario(SCENARIOS / f"{name}.yaml")
    single = {"workload.requests": 1, "workload.arrival": "single"}
    return base.with_values({**single, **changes})


def first_devices(name: str, n: int) -> Scenario:
    """A scenario of scenarios/ keeping only its first `n` devices (the host first)."""
    path = SCENARIOS / f"{name}.yaml"
    data = read_scenario_yaml(path)
    data["devices"] = data["devices"][:n]
    data["workload"] = {"requests": 1, "arrival": "single"}
    return parse_scenario(data, source=str(path), base_dir=str(SCENARIOS))


def prepared(s: Scenario) -> Prepared:
    """The scenario's model built once per process, with this scenario's cluster."""
    return prepare_reusing(s)


def latency_s(s: Scenario, method: str) -> float:
    """The simulated latency of one request of `method` on an idle cluster."""
    variant = s.with_values({"method.name": method})
    p = prepared(variant)
    return simulate(p.cluster, p.graph, make_plan(variant, p), [0.0], seed=s.seed)[0]


def trace(s: Scenario, method: str) -> tuple[Trace, Any]:
    """The simulated trace of one request of `method`, and its plan."""
    variant = s.with_values({"method.name": method})
    policy = StaticPolicy(variant, prepared(variant))
    with TraceWriter(None, "sim", method) as writer:
        result = simulator.run(variant, policy, writer)
    return result, policy.answer.plan


def write_rows(rows: list[dict[str, Any]], path: Path) -> Path:
    """The table a figure was drawn from, as CSV beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_table(path: Path, header: list[str], rows: Iterable[Sequence[Any]]) -> Path:
    """A table of plain rows under `header`, as CSV beside its figure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def save(fig: Any, out_dir: Path, name: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
