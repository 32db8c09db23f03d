"""The sweep engine: a scenario's grid of variants, simulated point by point, and its results.

`axes_of` turns `--set` texts into fixed overrides and sweep axes, `grid` is their cartesian
product, `point` simulates one grid point (in a worker process or as a Ray task, so it must stay
importable as `halp.sweep.point`), `run_grid` runs them all, and `write_csv` / `plot` write the
rows. A point that fails is a row with its `error`, never an exception: one bad variant does
not lose the others. A point whose plan computes something else than its model is such a row
(`halp.verdicts`), unless the sweep runs with `verify=False`; the `verified` column says which.
"""

from __future__ import annotations

import csv
import itertools
import multiprocessing
import socket
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from halp import units
from halp.errors import HalpError, ScenarioError
from halp.experiment import execute, single_request_s, standalone_s
from halp.methods import prepare_reusing
from halp.scenario import load_scenario, parse_override
from halp.serving import policy_for
from halp.verdicts import Checks

METRICS = ["requests", "mean_s", "p50_s", "p95_s", "max_s", "single_request_s",
           "standalone_latency_s", "speedup", "deadline_hit_rate", "verified", "error"]


# ---- the grid -----------------------------------------------------------------------------
def split_values(text: str) -> list[str]:
    """Split on commas outside brackets: `1,2` -> ['1', '2']; `[3,3],[4,4]` -> two lists."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def axes_of(overrides: list[str]) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """(fixed overrides, sweep axes) from the `--set` texts, values parsed as YAML."""
    fixed: dict[str, Any] = {}
    axes: dict[str, list[Any]] = {}
    for text in overrides:
        key, _ = parse_override(text)
        values = [parse_override(f"{key}={v}")[1] for v in split_values(text.partition("=")[2])]
        if not values:
            raise ScenarioError(f"--set {text!r}: no value")
        fixed.pop(key, None)
        axes.pop(key, None)
        if len(values) == 1:
            fixed[key] = values[0]
        else:
            axes[key] = values
    return fixed, axes


def grid(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the axes' values, the first axis varying slowest (the CSV's order)."""
    keys = list(axes)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*axes.values())]


# ---- one point (runs in a worker process) -------------------------------------------------
def point(path: str, fixed: dict[str, Any], values: dict[str, Any],
          verify: bool = True) -> dict[str, Any]:
    """Simulate one grid point, its plans checked exact first unless not `verify`; a failure
    becomes the row's `error`."""
    row: dict[str, Any] = {key: value for key, value in values.items()}
    try:
        scenario = load_scenario(path).with_values({**fixed, **values})
        prepared = prepare_reusing(scenario)
        policy = policy_for(scenario, prepared)
        checks = Checks(seed=scenario.seed) if verify else None
        single = single_request_s(scenario, prepared, checks)
        report = execute(scenario, "sim", None, policy=policy,
                         standalone=standalone_s(scenario, prepared, checks), verify=verify,
                         checks=checks)
        lat = report["latency_s"]
        row.update({"requests": report["requests"], "mean_s": lat["mean"], "p50_s": lat["p50"],
                    "p95_s": lat["p95"], "max_s": lat["max"], "single_request_s": single,
                    "standalone_latency_s": report["standalone_latency_s"],
                    "speedup": report["speedup"], "deadline_hit_rate": report["deadline_hit_rate"],
                    "verified": report["verified"], "error": ""})
    except HalpError as exc:
        return failed(values, str(exc))
    return row


def failed(values: dict[str, Any], error: str) -> dict[str, Any]:
    """The row of a point that could not be simulated."""
    return {**values, **{m: None for m in METRICS}, "error": error}


# ---- running the grid ---------------------------------------------------------------------
class Progress:
    """A plain-text progress bar on stderr."""

    def __init__(self, total: int, quiet: bool = False):
        self.total, self.done, self.quiet = total, 0, quiet
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()

    def step(self) -> None:
        self.done += 1
        if self.quiet:
            return
        width = 30
        filled = round(width * self.done / self.total)
        bar = "#" * filled + "-" * (width - filled)
        text = (f"sweep: [{bar}] {self.done}/{self.total} points, "
                f"{time.perf_counter() - self.t0:.0f} s")
        if self.tty:
            end = "\n" if self.done == self.total else ""
            print("\r" + text, end=end, file=sys.stderr, flush=True)
        else:
            print(text, file=sys.stderr, flush=True)


def run_grid(path: str, fixed: dict[str, Any], points: list[dict[str, Any]], jobs: int,
             ray_address: str | None = None, quiet: bool = False,
             verify: bool = True) -> list[dict[str, Any]]:
    """One row per point, in the points' order whatever order they finish in."""
    progress = Progress(len(points), quiet)
    if ray_address:
        return _run_ray(path, fixed, points, ray_address, progress, verify)
    if jobs <= 1 or len(points) == 1:
        rows = []
        for values in points:
            rows.append(point(path, fixed, values, verify))
            progress.step()
        return rows
    results: list[dict[str, Any] | None] = [None] * len(points)
    context = multiprocessing.get_context("spawn")  # no fork after torch has started threads
    with ProcessPoolExecutor(max_workers=min(jobs, len(points)), mp_context=context) as pool:
        futures = {pool.submit(point, path, fixed, values, verify): i
                   for i, values in enumerate(points)}
        for future in as_completed(futures):
            i = futures[future]
            try:
                results[i] = future.result()
            except Exception as exc:  # a worker died (a model's code exited it): the rest stay
                results[i] = failed(points[i], f"{type(exc).__name__}: {_first_line(exc)}")
            progress.step()
    return [r for r in results if r is not None]


def _run_ray(path: str, fixed: dict[str, Any], points: list[dict[str, Any]], address: str,
             progress: Progress, verify: bool = True) -> list[dict[str, Any]]:
    """Each point as a Ray task; a task Ray could not run (a lost node) becomes an error row."""
    try:
        import ray  # type: ignore[import-not-found]
    except ImportError:
        raise HalpError("--ray needs Ray, which is not installed: pip install ray "
                        "(or leave out --ray to use local worker processes)") from None
    _check_reachable(address)
    try:
        try:
            ray.init(address=address, log_to_driver=False)
        except ConnectionError as exc:
            if address == "auto":
                raise HalpError("--ray auto: no running Ray instance found here (start one with "
                                "`ray start --head`, or use --ray local)") from None
            raise HalpError(f"--ray {address}: {_first_line(exc)} (if the cluster uses token "
                            "authentication, set RAY_AUTH_MODE=token)") from None
        except (ValueError, RuntimeError) as exc:
            raise HalpError(f"--ray {address}: {_first_line(exc)}") from None
        remote = ray.remote(point)
        refs = [remote.remote(path, fixed, values, verify) for values in points]
        order = {ref: i for i, ref in enumerate(refs)}
        results: list[dict[str, Any]] = [{} for _ in points]
        pending = list(refs)
        while pending:
            (ref,), pending = ray.wait(pending, num_returns=1)
            i = order[ref]
            try:
                results[i] = ray.get(ref)
            except ray.exceptions.RayError as exc:
                cause = getattr(exc, "cause", None) or exc
                results[i] = failed(points[i], f"{type(cause).__name__}: {_first_line(cause)}")
            progress.step()
        return results
    finally:
        ray.shutdown()


def _check_reachable(address: str) -> None:
    """Fail fast on a HOST:PORT where nothing listens (ray.init would retry for minutes)."""
    if address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except (OSError, ValueError):
        raise HalpError(f"--ray {address}: no Ray head node answers there (give HOST:PORT of "
                        "a running cluster, `auto` or `local`)") from None


def _first_line(exc: BaseException) -> str:
    """Ray's errors carry whole tracebacks; a row's error and a CLI message want one line."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# ---- output -------------------------------------------------------------------------------
def numeric(value: Any) -> float | None:
    """A number to plot for an axis value: plain numbers, bandwidths, durations."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    for parse in (units.bandwidth_bps, units.duration_s):
        try:
            return parse(value)
        except HalpError:
            continue
    return None


def _parses(parse: Callable[[Any], float], value: Any) -> bool:
    """Whether `parse` reads `value`: names the unit of a plot's axis."""
    try:
        parse(value)
    except HalpError:
        return False
    return True


def write_csv(rows: list[dict[str, Any]], keys: list[str], path: Path) -> None:
    """The axis columns, then every metric (empty for a failed point)."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*keys, *METRICS])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k) for k in [*keys, *METRICS]})


def plot(rows: list[dict[str, Any]], keys: list[str], path: Path, title: str) -> Path:
    """Mean latency and speedup against the first axis, one line per combination of the others."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key, others = keys[0], keys[1:]
    xs = [numeric(r[x_key]) for r in rows]
    is_numeric = all(x is not None for x in xs)
    labels = list(dict.fromkeys(str(r[x_key]) for r in rows))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    lines: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        lines.setdefault(tuple(str(r[k]) for k in others), []).append(r)
    for combo, members in lines.items():
        members = [m for m in members if m.get("mean_s") is not None]
        if not members:
            continue
        if is_numeric:
            x = [numeric(m[x_key]) for m in members]
        else:
            x = [labels.index(str(m[x_key])) for m in members]
        label = ", ".join(f"{k}={v}" for k, v in zip(others, combo, strict=True))
        ax1.plot(x, [m["mean_s"] * 1e3 for m in members], marker="o", label=label or None)
        ax2.plot(x, [m["speedup"] or float("nan") for m in members], marker="o",
                 label=label or None)
    numbers = [x for x in xs if x is not None]
    unit = ""
    if is_numeric and isinstance(rows[0][x_key], str):
        unit = " (bit/s)" if _parses(units.bandwidth_bps, rows[0][x_key]) else " (s)"
    means = [r["mean_s"] for r in rows if r.get("mean_s")]
    if means and max(means) / min(means) > 20:
        ax1.set_yscale("log")
    for ax in (ax1, ax2):
        ax.set_xlabel(x_key + unit)
        ax.grid(alpha=0.3)
        if is_numeric and numbers and min(numbers) > 0 and max(numbers) / min(numbers) >= 10:
            ax.set_xscale("log")
        if not is_numeric:
            ax.set_xticks(range(len(labels)), labels)
    ax1.set_ylabel("mean latency (ms)")
    ax2.set_ylabel("speedup against stand-alone")
    ax2.axhline(1.0, color="grey", linewidth=0.8)
    if others:
        ax1.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
