"""The sweep engine's pure parts: axes from `--set` texts, the grid, plot numbers, failed rows."""

from __future__ import annotations

import itertools

from sim_cases import REPO

from halp.sweep import METRICS, axes_of, grid, numeric, run_grid

DEFAULT = str(REPO / "scenarios" / "default.yaml")


def test_several_values_make_an_axis_and_one_value_an_override():
    fixed, axes = axes_of(["network.bandwidth=10Mbps,50Mbps", "workload.requests=2",
                           "method.name=halp", "method.name=halp,modnn"])
    assert fixed == {"workload.requests": 2}
    assert axes == {"network.bandwidth": ["10Mbps", "50Mbps"], "method.name": ["halp", "modnn"]}


def test_the_grid_is_the_cartesian_product_of_the_axes():
    axes = {"bandwidth": ["10Mbps", "50Mbps"], "devices": [2, 3, 4], "method": ["halp"]}
    points = grid(axes)
    assert len(points) == 2 * 3 * 1
    assert [tuple(p.values()) for p in points] == list(itertools.product(*axes.values()))
    assert all(list(p) == list(axes) for p in points)  # every point names every axis
    assert grid({}) == [{}]  # no axis: the scenario itself


def test_numeric_reads_numbers_bandwidths_and_durations_only():
    assert numeric(3) == 3.0 and numeric(0.5) == 0.5
    assert numeric("10Mbps") == 10e6
    assert numeric("5ms") == 0.005
    assert numeric(True) is None  # a flag is not a position on an axis
    assert numeric("halp") is None


def test_a_failed_point_is_counted_and_named(capsys):
    points = grid({"method.name": ["nosuchmethod", "nosuchmethod2"]})
    rows = run_grid(DEFAULT, {"workload.requests": 1}, points, jobs=1)
    assert [r["method.name"] for r in rows] == ["nosuchmethod", "nosuchmethod2"]
    for row, name in zip(rows, ["nosuchmethod", "nosuchmethod2"], strict=True):
        assert name in row["error"]  # the row says which value failed, and why
        assert all(row[m] is None for m in METRICS if m != "error")
    assert "2/2 points" in capsys.readouterr().err  # failed points still count as done
