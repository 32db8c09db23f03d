"""Hostile input through the real CLI: files that are not what they claim, weights that are not
weights, factories that misbehave, names that climb out of their folder, sweeps that fail.

Each is refused with exit status 2 and one line on stderr naming the file or field and the
reason, no traceback, and nothing written outside the folder the user chose. The corpus is in
`tests/hostile/`; what is big, or a pickle that would run code, is made here in `tmp_path`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from halp.cli import main

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
])
def test_a_directory_given_for_a_file_is_a_directory(capsys, tmp_path, folder, override, field):
    (tmp_path / folder).mkdir()
    override = override.replace("DIR", str(tmp_path / folder))
    line = refused(capsys, "plan", str(TINY), "--set", override)
    says(line, field, str(tmp_path / folder), "is a directory")
