"""Hostile input, generated: valid scenarios, bandwidth traces and profiles mutated at random
(hypothesis), and every file of the hand-written corpus in `tests/hostile/`, run through the real
command in a process of its own, held to a memory limit and a time limit. The outcome is either
a valid run (exit 0) or a refusal (exit 2) of exactly one line; never a traceback, never a
crash of the interpreter, never a run past the time limit."""

from __future__ import annotations

import copy
import math
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).resolve().parent / "hostile"
MEMORY_BYTES = 6 * 2**30  # of address space: far above any valid run here, far below the machine
TIME_S = 120.0

BASE = {  # small enough to plan and simulate in a second or two
    "name": "fuzz",
    "seed": 3,
    "model": {"name": "mobilenet_v1", "width": 0.25, "resolution": 128},
    "devices": [{"name": "a", "role": "host", "profile": "this-machine", "speed": 0.2},
                {"name": "b", "profile": "PROFILE"},
                {"name": "c", "profile": "this-machine", "speed": 2.0}],
    "network": {"kind": "star", "bandwidth": "50Mbps",
                "links": {"b": {"trace": "trace.csv"},
                          "c": {"gauss_markov": {"mean": "40Mbps", "sigma": "5Mbps",
                                                 "step": "100ms", "duration": "10s"}}},
                "delay": "1ms"},
    "method": {"name": "halp"},
    "workload": {"requests": 3, "arrival": "periodic", "interval": "50ms", "deadline": "1s"},
    "dynamics": {"interval": "1s", "devices": {"c": {"steps": [{"at": "1s", "speed": 1.0}]}}},
}
TRACE = ["time_s,bandwidth_bps", "0,50000000", "0.05,20000000", "0.2,80000000"]

# Values a careless or hostile user might write anywhere: numbers out of range or not finite,
# units without numbers, huge texts, wrong types, paths that climb out.
HOSTILE: list[Any] = [
    0, -1, 1e400, math.nan, 2**64, -(2**63), 10**30, 3.5, 1e-300, True, None, [], {}, [1] * 50,
    {"a": {"b": {"c": 1}}}, "", "x" * 5000, "9" * 3000, "1e400Mbps", "nanMbps", "-5Mbps",
    "0s", "1us", "-5ms", "1e400s", "1e-30s", "nan", ".inf", "100000", "../../../tmp/escape",
    "/etc/passwd", "ü\u202e", "0x10", "1_000", "10 Mbps",
]
TRACE_FIELDS = ["nan", "inf", "-inf", "-1", "", "1e400", "abc", "0", "1e-320", "5" * 400]


def limited() -> None:
    """In the child, before it runs: a memory ceiling, so that a runaway allocation fails fast."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))


def halp(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, "-m", "halp.cli", *argv], cwd=cwd,
                              capture_output=True, text=True, timeout=TIME_S,
                              preexec_fn=limited, errors="replace")
    except subprocess.TimeoutExpired:
        pytest.fail(f"halp {' '.join(argv)} ran past {TIME_S:g} s", pytrace=False)


def assert_valid_or_one_line(result: subprocess.CompletedProcess, what: str) -> None:
    err = result.stderr.strip()
    assert "Traceback" not in result.stderr, f"{what}: traceback\n{result.stderr[-3000:]}"
    assert result.returncode in (0, 2), f"{what}: exit {result.returncode}\n{err[-2000:]}"
    if result.returncode == 2:
        assert len(err.splitlines()) == 1, f"{what}: refusal is not one line:\n{err[-2000:]}"


# ---- mutations ----------------------------------------------------------------------------
def places(tree: Any, path: tuple = ()) -> list[tuple]:
    """Every path to a value in a tree of dicts and lists, containers included."""
    found = [path] if path else []
    if isinstance(tree, dict):
        for key, value in tree.items():
            found += places(value, (*path, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            found += places(value, (*path, i))
    return found


def parent_of(tree: Any, path: tuple) -> Any:
    for key in path[:-1]:
        tree = tree[key]
    return tree


@st.composite
def mutated_tree(draw: st.DrawFn, base: Any) -> Any:
    tree = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        spots = places(tree)
        if not spots:
            break
        path = draw(st.sampled_from(spots))
        parent = parent_of(tree, path)
        kind = draw(st.sampled_from(["replace", "replace", "delete", "add", "rename"]))
        if kind == "replace":
            parent[path[-1]] = draw(st.sampled_from(HOSTILE))
        elif kind == "delete":
            del parent[path[-1]]
        elif kind == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["extra", "netwrok", "Name", "seed ", "1", "-"]))] = \
                draw(st.sampled_from(HOSTILE))
        elif kind == "rename" and isinstance(parent, dict):
            key = path[-1]
            parent[f"{key}x" if draw(st.booleans()) else str(key)[:-1]] = parent.pop(key)
    return tree


@st.composite
def mutated_trace(draw: st.DrawFn) -> str:
    lines = list(TRACE)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["field", "drop", "duplicate", "reverse", "extra", "junk"]))
        i = draw(st.integers(0, len(lines) - 1)) if lines else 0
        if kind == "field" and lines:
            fields = lines[i].split(",")
            fields[draw(st.integers(0, len(fields) - 1))] = draw(st.sampled_from(TRACE_FIELDS))
            lines[i] = ",".join(fields)
        elif kind == "drop" and lines:
            del lines[i]
        elif kind == "duplicate" and lines:
            lines.insert(i, lines[i])
        elif kind == "reverse":
            lines = lines[:1] + lines[:0:-1]
        elif kind == "extra":
            lines.insert(i, "1,2,3")
        elif kind == "junk":
            lines.insert(i, "\x00\udcff\udcfe garbage")  # bytes that are not UTF-8
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def profile() -> dict[str, Any]:
    return yaml.safe_load((REPO / "profiles" / "this-machine.yaml").read_text())


def write_case(folder: Path, scenario: Any, trace: str, profile: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trace.csv").write_bytes(trace.encode("utf-8", "surrogateescape"))
    (folder / "profile.yaml").write_text(yaml.safe_dump(profile, allow_unicode=True))
    text = yaml.safe_dump(scenario, allow_unicode=True, sort_keys=False)
    path = folder / "scenario.yaml"
    path.write_text(text.replace("PROFILE", str(folder / "profile.yaml")))
    return path


# Examples per fuzzed test: 8 in `make test` (a second or two each); `make test-long` runs 48.
EXAMPLES = int(os.environ.get("HALP_FUZZ_EXAMPLES", "8"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def test_the_unmutated_case_runs(tmp_path, profile):
    """The base of every mutation is valid: refusals below are the mutation's doing."""
    path = write_case(tmp_path / "case", BASE, "\n".join(TRACE) + "\n", profile)
    result = halp(tmp_path, "run", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr


@given(scenario=mutated_tree(BASE), command=st.sampled_from(["plan", "run", "run --out"]))
@SETTINGS
def test_a_mutated_scenario_runs_or_is_refused_in_one_line(tmp_path_factory, profile, scenario,
                                                            command):
    folder = tmp_path_factory.mktemp("scenario")
    path = write_case(folder / "case", scenario, "\n".join(TRACE) + "\n", profile)
    argv = [command.split()[0], str(path)] + (["--out", "out"] if "--out" in command else [])
    around = set(folder.parent.iterdir())
    assert_valid_or_one_line(halp(folder, *argv), f"halp {command} of {scenario!r}")
    # Whatever the scenario's name, a run writes only inside the folder it runs in.
    assert set(folder.parent.iterdir()) == around
    assert {p.name for p in folder.iterdir()} <= {"case", "out", "runs"}


@given(trace=mutated_trace())
@SETTINGS
def test_a_mutated_trace_runs_or_is_refused_in_one_line(tmp_path_factory, profile, trace):
    folder = tmp_path_factory.mktemp("trace")
    path = write_case(folder / "case", BASE, trace, profile)
    assert_valid_or_one_line(halp(folder, "plan", str(path)), f"trace {trace!r}")


@given(mutated=st.data())
@SETTINGS
def test_a_mutated_profile_plans_or_is_refused_in_one_line(tmp_path_factory, profile, mutated):
    changed = mutated.draw(mutated_tree(profile))
    folder = tmp_path_factory.mktemp("profile")
    path = write_case(folder / "case", BASE, "\n".join(TRACE) + "\n", changed)
    assert_valid_or_one_line(halp(folder, "plan", str(path)), "profile mutation")


VALID_BASE = "tiny.yaml"  # the corpus's one valid scenario, which its hostile files vary
CORPUS_FILES = sorted(p for p in CORPUS.glob("*.yaml") if p.name != VALID_BASE)


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_every_file_of_the_hostile_corpus_is_refused_in_one_line(tmp_path, path):
    assert CORPUS_FILES, "the corpus is empty"
    result = halp(tmp_path, "plan", str(path))
    assert_valid_or_one_line(result, path.name)
    assert result.returncode == 2, f"{path.name} was accepted"
