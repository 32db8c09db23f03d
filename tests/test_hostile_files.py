"""Hostile input through the real CLI: files that are not what they claim, weights that are not
weights, factories that misbehave, names that climb out of their folder, sweeps that fail.

Each is refused with exit status 2 and one line on stderr naming the file or field and the
reason, no traceback, and nothing written outside the folder the user chose. The corpus is in
`tests/hostile/`; what is big, or a pickle that would run code, is made here in `tmp_path`.
"""

from __future__ import annotations

import csv
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from halp.cli import main
from halp.errors import HalpError
from halp.outdirs import below
from halp.userfiles import GB

HOSTILE = Path(__file__).resolve().parent / "hostile"
TINY = HOSTILE / "tiny.yaml"
MARKER = "HALP_MARKER"


def refused(capsys, *argv: str) -> str:
    """Run `halp ARGV`; assert exit 2 and one plain line on stderr, and return that line."""
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def says(line: str, *words: str) -> None:
    for word in words:
        assert word.lower() in line.lower(), line


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Every test stands in its own empty folder: `runs/` and any stray file would land here."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---- YAML that is not what it claims ------------------------------------------------------
@pytest.mark.parametrize("name,words", [
    ("latin1.yaml", ["not UTF-8", "line 1"]),
    ("binary.yaml", ["not UTF-8", "0x89"]),
    ("nul_byte.yaml", ["not valid YAML", "line 2", "#x0000"]),
    ("duplicate_keys.yaml", ["duplicate key 'network'", "line 8", "first at line 6"]),
    ("billion_laughs.yaml", ["line 1", "anchors and aliases"]),
    ("python_tag.yaml", ["line 2", "!!python/object/apply:os.system", "not allowed"]),
    ("misspelled_key.yaml", ["netwrok", "unknown key", "did you mean network"]),
    ("name_escape.yaml", ["name", "'../x'", "not a safe name"]),
])
def test_a_hostile_scenario_file_is_one_line_naming_it(capsys, in_tmp, name, words):
    line = refused(capsys, "plan", str(HOSTILE / name))
    says(line, str(HOSTILE / name), *words)
    assert not (in_tmp / MARKER).exists()  # the !!python tag ran nothing


def test_a_scenario_nested_50000_deep_is_refused_without_recursion(capsys, tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("name: " + "[" * 50_000 + "]" * 50_000 + "\n")
    says(refused(capsys, "plan", str(path)), str(path), "line 1", "nested more than 64")


def test_a_scenario_over_1_mb_is_refused_unread(capsys, tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# padding\n" * 110_000)
    says(refused(capsys, "plan", str(path)), str(path), "1.1 MB", "larger than the 1 MB")


@pytest.mark.parametrize("make,words", [
    (lambda p: p.mkdir(), ["is a directory"]),
    (lambda p: None, ["no such file"]),
    (lambda p: os.mkfifo(p), ["not a regular file"]),  # reading it would block forever
])
def test_a_scenario_path_that_is_not_a_file_says_what_it_is(capsys, tmp_path, make, words):
    path = tmp_path / "scenario.yaml"
    make(path)
    says(refused(capsys, "plan", str(path)), str(path), *words)


@pytest.mark.parametrize("override,words", [
    ("method={name: halp, name: modnn}", ["--set method", "duplicate key 'name'"]),
    ("seed=&x 1", ["--set seed", "anchors"]),
    ("seed=" + "[" * 100 + "]" * 100, ["--set seed", "nested more than 64"]),
    ("seed=!!python/object/apply:os.system [touch HALP_MARKER]", ["--set seed", "tag"]),
    ("name=../x", ["name", "not a safe name"]),
    ("seed=2024-13-45", ["--set seed", "cannot read '2024-13-45'", "month"]),
    ("seed=" + "9" * 5000, ["--set seed", "cannot read", "4300 digits"]),
])
def test_a_hostile_set_value_obeys_the_same_rules(capsys, in_tmp, override, words):
    says(refused(capsys, "plan", str(TINY), "--set", override), *words)
    assert not (in_tmp / MARKER).exists()


def test_a_profile_with_duplicate_keys_is_refused_naming_device_and_file(capsys):
    line = refused(capsys, "plan", str(TINY), "--set",
                   f"devices.b.profile={HOSTILE / 'duplicate_keys_profile.yaml'}")
    says(line, "devices.1.profile", "duplicate_keys_profile.yaml", "duplicate key 'coefficients'",
         "line 4")


@pytest.mark.parametrize("folder,override,field", [
    ("p.yaml", "devices.b.profile=DIR", "devices.1.profile"),
    ("t.csv", "network.links={b: {trace: DIR}}", "network.links.b.trace"),
    ("w.pt", "model.weights=DIR", "model.weights"),
    ("f.py", "model.factory=DIR:build", "model.factory"),
])
def test_a_directory_given_for_a_file_is_a_directory(capsys, tmp_path, folder, override, field):
    (tmp_path / folder).mkdir()
    override = override.replace("DIR", str(tmp_path / folder))
    line = refused(capsys, "plan", str(TINY), "--set", override)
    says(line, field, str(tmp_path / folder), "is a directory")


# ---- weights that are not weights ---------------------------------------------------------
def tiny_state() -> dict[str, torch.Tensor]:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1)).state_dict()


class RunsCode:
    """A pickle that would run a shell command when unpickled."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def saved(path: Path, data) -> Path:
    torch.save(data, path)
    return path


def truncated(path: Path) -> Path:
    saved(path, tiny_state())
    path.write_bytes(path.read_bytes()[:200])
    return path


def raw_pickle(path: Path) -> Path:
    path.write_bytes(pickle.dumps({"0.weight": RunsCode()}, protocol=2))
    return path


WEIGHTS = [
    (lambda p: saved(p, torch.zeros(4, 3, 3, 3)),
     ["one tensor", "[4, 3, 3, 3]", "not a state_dict"]),
    (lambda p: saved(p, [torch.zeros(1)]), ["holds a list", "not a state_dict"]),
    (lambda p: saved(p, {"0.weight": 1.0}), ["'0.weight'", "float", "not a tensor"]),
    (lambda p: saved(p, {"state_dict": tiny_state(), "epoch": 3}), ["'state_dict'", "checkpoint"]),
    (lambda p: saved(p, {k.replace("2.", "9."): v for k, v in tiny_state().items()}),
     ["2 key(s) missing (first: '2.weight')", "2 unexpected (first: '9.weight')", "4 keys"]),
    (lambda p: saved(p, {**tiny_state(), "0.weight": torch.zeros(4, 3, 5, 5)}),
     ["'0.weight'", "[4, 3, 5, 5] in the file", "[4, 3, 3, 3] in the model"]),
    (truncated, ["not a torch.save file", "truncated"]),
    (lambda p: p.write_bytes(bytes(range(256))), ["not a torch.save file"]),
    *[(lambda p, seed=seed: p.write_bytes(random.Random(seed).randbytes(300)),
       ["not a torch.save file"]) for seed in range(20)],  # junk trips the unpickler many ways
    (lambda p: p.write_bytes(b""), ["empty"]),
    (lambda p: saved(p, {"0.weight": RunsCode()}), ["pickled posix.system", "refused"]),
    (raw_pickle, ["pickled posix.system", "refused"]),
]


@pytest.mark.parametrize("make,words", WEIGHTS, ids=[f"weights{i}" for i in range(len(WEIGHTS))])
def test_a_weights_file_that_is_not_the_models_state_dict_is_one_line(capsys, in_tmp, make, words):
    path = in_tmp / "w.pt"
    make(path)
    line = refused(capsys, "plan", str(TINY), "--set", f"model.weights={path}")
    says(line, "model.weights", str(path), *words)
    assert "weights_only" not in line  # never the advice to load it unsafely
    assert not (in_tmp / MARKER).exists()  # and the pickle's command never ran


def test_a_weights_file_over_4_gb_is_refused_unread(capsys, tmp_path):
    path = tmp_path / "huge.pt"
    with path.open("wb") as handle:
        handle.truncate(4 * GB + 1)  # sparse: no disk used
    says(refused(capsys, "plan", str(TINY), "--set", f"model.weights={path}"),
         "model.weights", "larger than the 4 GB")


def test_a_policy_file_holding_a_foreign_pickle_is_refused(capsys, in_tmp):
    path = saved(in_tmp / "policy.pt", {"meta": "{}", "state_dict": RunsCode()})
    line = refused(capsys, "plan", str(TINY), "--set", f"method={{name: erl, policy: {path}}}")
    says(line, str(path), "pickled posix.system")
    assert not (in_tmp / MARKER).exists()


def test_a_policy_asking_for_a_huge_actor_is_refused_before_building_it(capsys, in_tmp):
    meta = '{"obs_dim": 3, "action_dim": 2, "hidden": 1000000000, "devices": ["a", "b"], ' \
           '"cuts": [0, 1], "model": "tiny_net:build"}'
    path = saved(in_tmp / "policy.pt", {"meta": meta, "state_dict": {}})
    line = refused(capsys, "plan", str(TINY), "--set", f"method={{name: erl, policy: {path}}}")
    says(line, str(path), "hidden is 1000000000", "from 1 to 4096")


def test_a_policy_path_that_is_a_directory_is_refused(capsys, tmp_path):
    (tmp_path / "policy.pt").mkdir()
    line = refused(capsys, "plan", str(TINY), "--set",
                   f"method={{name: erl, policy: {tmp_path / 'policy.pt'}}}")
    says(line, "method.policy", "is a directory")


# ---- factories that misbehave -------------------------------------------------------------
@pytest.mark.parametrize("factory,words", [
    ("factory_exit_on_import.py:build", ["importing factory_exit_on_import.py", "exit(3)"]),
    ("factory_raise.py:build", ["failed: ValueError: no layers here"]),
    ("factory_syntax.py:build", ["importing factory_syntax.py", "SyntaxError"]),
    ("factory_import_error.py:build", ["ModuleNotFoundError", "no_such_module_for_halp"]),
    ("factory_not_module.py:build", ["returned list", "not an nn.Module"]),
    ("tiny_net.py:absent", ["has no 'absent'"]),
])
def test_a_misbehaving_factory_is_one_line_naming_it(capsys, factory, words):
    line = refused(capsys, "plan", str(TINY), "--set", f"model.factory={factory}")
    says(line, f"factory {HOSTILE / factory}", *words)
    assert "second line" not in line


def test_a_factory_calling_exit_does_not_end_halp_with_status_0(tmp_path):
    result = subprocess.run([sys.executable, "-m", "halp.cli", "plan", str(TINY), "--set",
                             "model.factory=factory_exit.py:build"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    says(line, "factory_exit.py:build", "called exit()")


def test_a_keyboard_interrupt_in_a_factory_still_interrupts(capsys):
    code = main(["plan", str(TINY), "--set", "model.factory=factory_interrupt.py:build"])
    assert code == 130
    assert "interrupted" in capsys.readouterr().err


# ---- names and output folders -------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["run", str(HOSTILE / "name_escape.yaml")],
    ["compare", str(HOSTILE / "name_escape.yaml"), "--methods", "halp"],
    ["run", str(TINY), "--set", "name=../../escaped"],
    ["sweep", str(TINY), "--set", "name=..", "--set", "seed=1,2", "--jobs", "1"],
])
def test_a_name_climbing_out_of_runs_is_refused_and_nothing_is_written(capsys, in_tmp, argv):
    says(refused(capsys, *argv), "name", "not a safe name")
    assert list(in_tmp.iterdir()) == []  # no runs/, nothing beside it
    assert not (in_tmp.parent / "x").exists() and not (in_tmp.parent / "escaped").exists()


def test_a_path_built_in_a_folder_stays_inside_it(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "halp").symlink_to(tmp_path / "elsewhere")
    assert below(tmp_path / "out", "modnn") == tmp_path / "out" / "modnn"
    for name in ["halp", "../elsewhere", "/tmp"]:
        with pytest.raises(HalpError, match="outside the output folder"):
            below(tmp_path / "out", name)


# ---- sweeps that fail ---------------------------------------------------------------------
def sweep(out: Path, cuts: str) -> tuple[int, list[dict[str, str]]]:
    code = main(["sweep", str(TINY), "--set", "method.name=offload", "--set", f"method.cut={cuts}",
                 "--jobs", "1", "--out", str(out), "--json"])
    return code, list(csv.DictReader((out / "sweep.csv").open()))


def test_a_sweep_with_some_failed_points_exits_1_and_keeps_every_row(capsys, tmp_path):
    code, rows = sweep(tmp_path / "s", "1,99")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err == [f"halp sweep: 1 of 2 points failed; see the error column of "
                   f"{tmp_path / 's' / 'sweep.csv'}"]
    assert [bool(r["error"]) for r in rows] == [False, True] and rows[0]["mean_s"]


def test_a_sweep_whose_every_point_failed_exits_2_with_the_rows_written(capsys, tmp_path):
    code, rows = sweep(tmp_path / "s", "98,99")
    [line] = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    says(line, "2 of 2 points failed", "sweep.csv", "the first:", "method.cut 98")
    assert len(rows) == 2 and all(r["error"] for r in rows)


def test_a_sweep_worker_killed_by_a_factory_is_a_failed_row_not_a_lost_sweep(capsys, tmp_path):
    out = tmp_path / "s"
    code = main(["sweep", str(TINY), "--set", "model.factory=factory_os_exit.py:build",
                 "--set", "seed=1,2", "--jobs", "2", "--out", str(out), "--json"])
    [line] = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    says(line, "2 of 2 points failed", "BrokenProcessPool")
    assert [r["seed"] for r in csv.DictReader((out / "sweep.csv").open())] == ["1", "2"]
