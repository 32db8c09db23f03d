"""Bandwidth traces: a good CSV loads; a bad one is refused as `FILE line N: reason`, in one line,
whatever is wrong with it (header, numbers, order, range, size, encoding)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from halp import network
from halp.channel import gauss_markov, gilbert_elliott
from halp.errors import HalpError, ScenarioError
from halp.network import BandwidthTrace, read_trace
from halp.scenario import load_scenario

HEADER = "time_s,bandwidth_bps\n"


def write(tmp_path: Path, content: str | bytes, name: str = "bw.csv") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def test_a_good_trace_loads_with_a_byte_order_mark_spaces_and_blank_lines(tmp_path):
    path = write(tmp_path, "\ufefftime_s, bandwidth_bps\n0, 100e6\n\n1.5,20000000\n2.5e1,1\n\n")
    trace = read_trace(path)
    assert trace.times == (0.0, 1.5, 25.0)
    assert trace.values == (100e6, 20e6, 1.0)


# (file contents, the line the refusal names or None for the whole file, a word of the reason)
BAD = [
    ("", None, "empty"),
    ("\n \n", None, "empty"),
    (HEADER, None, "no rows"),
    (HEADER + "\n\n", None, "no rows"),
    ("0,100000000\n10,20000000\n", 1, "header"),  # no header: was a KeyError
    ("time_s\n0\n", 1, "header"),
    ("bandwidth_bps,time_s\n1e6,0\n", 1, "header"),
    ("time_s,bandwidth_bps,note\n0,1e6,x\n", 1, "header"),
    ("time,bps\n0,1e6\n", 1, "header"),
    (HEADER + "nan,1e6\n", 2, "finite"),
    (HEADER + "0,1e6\n1,inf\n", 3, "finite"),
    (HEADER + "0,-inf\n", 2, "finite"),
    (HEADER + "0,1e6\ninfinity,1e6\n", 3, "finite"),
    (HEADER + "1e400,1e6\n", 2, "finite"),
    (HEADER + "-1,1e6\n", 2, "negative"),
    (HEADER + "0,1e6\n5,1e6\n3,1e6\n", 4, "increase"),
    (HEADER + "0,1e6\n0,2e6\n", 3, "increase"),
    (HEADER + "0,0\n", 2, "outside"),
    (HEADER + "0,1e6\n1,-5e6\n", 3, "outside"),
    (HEADER + "0,0.5\n", 2, "outside"),
    (HEADER + "0,2e12\n", 2, "outside"),
    (HEADER + "0,fast\n", 2, "cannot read"),
    (HEADER + "0,1e6\n,\n", 3, "cannot read"),
    (HEADER + "0,1e6,7\n", 2, "columns"),
    (HEADER + "0\n", 2, "columns"),
    (HEADER + "0," + "1" * 100 + "\n", 2, "too long"),
    (HEADER + "0," + "9" * 200_000 + "\n", 2, "csv"),  # a field past the csv module's limit
]


@pytest.mark.parametrize("content, line, reason", BAD,
                         ids=[f"{i}-{b[0][:30]!r}" for i, b in enumerate(BAD)])
def test_a_bad_trace_names_the_file_the_line_and_the_reason(tmp_path, content, line, reason):
    path = write(tmp_path, content)
    with pytest.raises(HalpError) as info:
        read_trace(path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 300
    assert message.startswith(str(path))
    if line is not None:
        assert f"{path} line {line}:" in message
    assert reason.lower() in message.lower()


def test_a_trace_that_is_not_utf8_names_the_line(tmp_path):
    path = write(tmp_path, HEADER.encode() + b"0,1e6\n1,\xff\xfe\n")
    with pytest.raises(HalpError, match=r"bw.csv line 3: not UTF-8"):
        read_trace(path)


def test_a_binary_file_is_refused_in_one_line(tmp_path):
    path = write(tmp_path, bytes(range(256)) * 10)
    with pytest.raises(HalpError) as info:
        read_trace(path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def test_a_trace_with_too_many_rows_is_refused_at_the_first_row_too_many(tmp_path, monkeypatch):
    monkeypatch.setattr(network, "MAX_TRACE_ROWS", 3)
    assert len(read_trace(write(tmp_path, HEADER + "0,1\n1,2\n2,3\n")).times) == 3
    with pytest.raises(HalpError, match=r"line 5: more than 3 rows"):
        read_trace(write(tmp_path, HEADER + "0,1\n1,2\n2,3\n3,4\n"))


def test_a_trace_file_too_large_is_refused_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(network, "MAX_TRACE_BYTES", 100)
    path = write(tmp_path, HEADER + "".join(f"{i},1e6\n" for i in range(30)))
    with pytest.raises(HalpError, match=r"bytes is too large for a bandwidth trace"):
        read_trace(path)


def test_the_limits_admit_a_million_rows_in_the_size_allowed():
    row = f"{1e6 - 1:.6f},{1e12:.6e}\n"  # a wide row near the limits
    assert len(HEADER) + network.MAX_TRACE_ROWS * len(row) < network.MAX_TRACE_BYTES


def test_a_trace_in_memory_must_be_finite():
    with pytest.raises(HalpError, match="finite"):
        BandwidthTrace((0.0, float("nan")), (1e6, 2e6))
    with pytest.raises(HalpError, match="finite"):
        BandwidthTrace((0.0,), (float("inf"),))


@pytest.mark.parametrize("step_s, duration_s, reason", [
    (0.0, 10.0, "positive step"), (-1.0, 10.0, "positive step"),
    (float("nan"), 10.0, "positive step"), (1.0, float("inf"), "finite duration"),
    (1e-6, 3600.0, "at most"), (1e-3, 1e4, "at most"),
])
def test_a_generated_trace_is_refused_before_anything_is_drawn(step_s, duration_s, reason):
    for generate in (lambda: gilbert_elliott(40e6, 4e6, 0.1, 0.2, step_s, duration_s, 1),
                     lambda: gauss_markov(40e6, 10e6, 0.9, step_s, duration_s, 1, 1e5)):
        with pytest.raises(HalpError, match=reason):
            generate()


SCENARIO = """\
name: t
model: {name: mobilenet_v1, width: 0.25, resolution: 128}
devices:
  - {name: a, role: host, profile: this-machine}
  - {name: b, profile: this-machine}
network: {kind: star, bandwidth: 100Mbps, links: {b: {trace: bw.csv}}}
method: {name: halp}
"""


def test_a_scenario_with_a_bad_trace_names_the_link_the_file_and_the_line(tmp_path):
    write(tmp_path, HEADER + "0,1e6\n1,nan\n")
    (tmp_path / "s.yaml").write_text(SCENARIO)
    with pytest.raises(ScenarioError) as info:
        load_scenario(tmp_path / "s.yaml")
    message = str(info.value)
    assert "network.links.b.trace" in message
    assert f"{tmp_path / 'bw.csv'} line 3: bandwidth_bps" in message
    assert "finite" in message


def test_halp_plan_on_a_bad_trace_exits_2_with_one_line(tmp_path):
    write(tmp_path, "0,100000000\n10,20000000\n")
    (tmp_path / "s.yaml").write_text(SCENARIO)
    result = subprocess.run([sys.executable, "-m", "halp.cli", "plan", str(tmp_path / "s.yaml")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "bw.csv line 1: the header must be 'time_s,bandwidth_bps'" in result.stderr
