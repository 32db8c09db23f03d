"""The emulator backend on real Mininet (root only): exact outputs over shaped links, a dead
worker ends the run in bounded time, workers shrug off garbage, and nothing is left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, write_scenario

import emu.network
from emu.backend import EmulatedRun, EmulatorBackend
from emu.network import EmulatedNetwork, netem_available
from emu.topology import HTB_BURST_BYTES
from halp.cli import main
from halp.errors import BackendError
from halp.runtime import TOLERANCE
from halp.scenario import load_scenario
from halp.serving import policy_for
from halp.trace import TraceWriter, read_trace_dir

from emu_support import emu_required, machine_state  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.emu, pytest.mark.usefixtures("emu_required", "machine_state")]

# MobileNet-V1 0.25 at 128 px: small enough for a quarter core. The host's planning speed is
# low so that HALP hands rows to the secondaries (at speed 1 it keeps this tiny model local).
SCENARIO = """\
name: emu-test
seed: 3
model: {model}
devices:
  - {{name: a, role: host, profile: this-machine, cpu_share: 0.5, speed: 0.05}}
{secondaries}
network: {{kind: star, bandwidth: 50Mbps}}
method: {{name: {method}}}
workload: {{requests: {requests}, arrival: periodic, interval: {interval}}}
backends: {{emu: {{timeout: 60s}}}}
"""


def scenario(tmp_path: Path, devices: int = 2, method: str = "halp", requests: int = 2,
             interval: str = "100ms",
             model: str = "{name: mobilenet_v1, width: 0.25, resolution: 128}"):
    secondaries = "\n".join(f"  - {{name: {n}, profile: this-machine, cpu_share: 0.5}}"
                            for n in "bcd"[:devices - 1])
    text = SCENARIO.format(secondaries=secondaries, method=method, requests=requests,
                           interval=interval, model=model)
    return load_scenario(write_scenario(tmp_path, text))


def quiet(_line: str) -> None:
    pass


# HALP on three devices and MoDNN on two in `make test`; the other two in `make test-long`.
@pytest.mark.slow
@pytest.mark.parametrize(("method", "devices"), [
    ("halp", 3), ("modnn", 2),
    pytest.param("halp", 2, marks=pytest.mark.long), pytest.param("modnn", 3, marks=pytest.mark.long)])
def test_plans_compute_exact_outputs_over_the_emulated_network(tmp_path, devices,
                                                                method):
    s = scenario(tmp_path, devices, method)

    with TraceWriter(tmp_path / "out", "emu", method) as writer:
        trace = EmulatorBackend(log=quiet).run(s, policy_for(s), writer)

    assert len(trace.requests) == 2
    for record in trace.requests:
        assert record.extra["relative_error"] <= TOLERANCE
    # Conformance: every op of the plan, after its inputs, with the plan's bytes.
    plan = policy_for(s).served()[0].plan
    ops = trace.by_key()
    for record in trace.requests:
        for op in plan.ops:
            got = ops[(record.request, op.id)]
            for i in op.inputs:
                slack = got.uncertainty_s + ops[(record.request, i)].uncertainty_s + 1e-3
                assert got.start >= ops[(record.request, i)].end - slack, f"{op.id} before {i}"
            assert got.bytes == getattr(op, "bytes", 0)
    used = {op.device for op in trace.ops if op.kind == "compute"}
    assert used == {op.device for op in plan.ops if op.kind == "compute"}
    assert len(used) >= 2  # the plan shares the work out
    transfers = [op for op in trace.ops if op.kind == "transfer"]
    assert transfers and all(op.bytes > 0 and op.end > op.start for op in transfers)
    on_disk = read_trace_dir(tmp_path / "out")
    assert len(on_disk.requests) == 2 and len(on_disk.ops) == len(trace.ops)
    assert not (tmp_path / "out" / "emu" / "token").exists()


USERNET = """\
from torch import nn

def build():
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 32, 5, padding=2), nn.ReLU6(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.ReLU(),
                         nn.Conv2d(32, 64, 1), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(64, 10))
"""


@pytest.mark.slow
def test_a_users_own_model_beside_the_scenario_is_exact_over_the_network(tmp_path):
    """A model the zoo does not know: the workers build it from the scenario's file too."""
    (tmp_path / "usernet.py").write_text(USERNET)
    s = scenario(tmp_path, devices=3,
                 model="{name: custom, factory: 'usernet:build', input_shape: [3, 96, 96]}")

    with TraceWriter(tmp_path / "out", "emu", "halp") as writer:
        trace = EmulatorBackend(log=quiet).run(s, policy_for(s), writer)

    assert [r.request for r in trace.requests] == [0, 1]
    assert all(r.extra["relative_error"] <= TOLERANCE for r in trace.requests)
    assert len({op.device for op in trace.ops if op.kind == "compute"}) >= 2


def cpu_cgroups(pid: int) -> dict[str, set[str]]:
    """The cpu cgroup of each thread of process `pid`, by thread name."""
    out: dict[str, set[str]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        name = (task / "comm").read_text().strip()
        for line in (task / "cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "cpu" in controllers.split(","):
                out.setdefault(name, set()).add(path)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("io_in_quota", [False, pytest.param(True, marks=pytest.mark.long)])
def test_only_compute_is_held_to_the_device_share(tmp_path, io_in_quota):
    s = scenario(tmp_path, devices=2).with_values({"backends.emu.io_in_quota": io_in_quota,
                                                   "backends.emu.cpu_model": "quota"})
    emu_run = EmulatedRun(s, tmp_path / "run", quiet)

    with emu_run.serving() as net:
        # the worker has sent blocks: all threads exist
        trace = emu_run.serve(net, s, policy_for(s), "halp")
        worker = emu_run.processes.workers()[0]
        threads = cpu_cgroups(worker.pid)

    assert len(trace.requests) == 2
    device_group = "/" + emu_run.topology.node(worker.device).node
    assert threads["halp-compute"] == {device_group}  # the share is the device's speed
    io = {name: groups for name, groups in threads.items()  # a sender per peer it sends to
          if name.startswith("halp-send-") or name in ("ZMQbg/IO/0", "ZMQbg/Reaper")}
    assert len(io) == 3
    expected = device_group if io_in_quota else "/"
    assert all(groups == {expected} for groups in io.values()), threads


@pytest.mark.slow
def test_a_bandwidth_trace_plays_during_the_run(tmp_path):
    (tmp_path / "b.csv").write_text("time_s,bandwidth_bps\n0,50e6\n0.3,5e6\n")
    s = scenario(tmp_path, devices=2, requests=4, interval="200ms").with_values(
        {"network.links": {"b": {"trace": "b.csv"}}})

    trace = EmulatorBackend(log=quiet).run(s, policy_for(s), TraceWriter(None, "emu", "halp"))

    assert len(trace.requests) == 4
    assert [(c["link"], c["bps"]) for c in trace.meta["rate_changes"]] == [("b", 5e6)]
    assert trace.meta["rate_changes"][0]["time_s"] == pytest.approx(0.3, abs=0.05)
    # What crosses b's link after the change crawls: its transfers take longer than before it
    # (those larger than HTB's burst, which passes at line rate: the classifier's features do).
    sent = [op for op in trace.ops if op.kind == "transfer" and "b" in op.resource.split("->")
            and op.bytes > HTB_BURST_BYTES]
    early = [op.duration / op.bytes for op in sent if op.end < 0.3]
    late = [op.duration / op.bytes for op in sent if op.start > 0.35]
    assert early and late and min(late) > 3 * max(early)


@pytest.mark.slow
def test_selection_follows_a_bandwidth_drop_on_the_emulator(tmp_path):
    # Predicted (planning speed 0.05 on the host): 0.5_128 meets the deadline only with HALP
    # handing rows to b at 50 Mbps; at 10 Mbps HALP keeps it local, too slow, and 0.25_128 is
    # chosen. The deadline is set between those predictions, which move with the profile.
    (tmp_path / "b.csv").write_text("time_s,bandwidth_bps\n0,50e6\n1.2,10e6\n")
    s = scenario(tmp_path, devices=2, requests=6, interval="500ms").with_values({
        "network.links": {"b": {"trace": "b.csv"}},
        "method": {"name": "select", "base": "halp", "variants": ["0.25_128", "0.5_128"],
                   "window": 2}})
    policy = policy_for(s)
    slow = {v.variant: v.predicted_s for v in policy.candidates({"b": 10e6})}
    fast = {v.variant: v.predicted_s for v in policy.candidates({"b": 50e6})}
    deadline_s = 1.02 * max(fast["0.5_128"], slow["0.25_128"])
    assert deadline_s < slow["0.5_128"], (fast, slow)
    s = s.with_values({"workload.deadline": f"{deadline_s * 1e3:.3f}ms"})

    trace = EmulatorBackend(log=quiet).run(s, policy_for(s), TraceWriter(None, "emu", "select"))

    chosen = [r.extra["variant"] for r in trace.requests]
    assert chosen[0] == "0.5_128" and chosen[-1] == "0.25_128", chosen
    assert all(r.extra["relative_error"] <= TOLERANCE for r in trace.requests)
    estimates = [r.extra["bandwidth_estimate_bps"]["b"] for r in trace.requests]
    assert estimates[0] == 50e6 and estimates[-1] < 15e6
    assert [r.model for r in trace.requests] == chosen  # the variant chosen is the one run


@pytest.mark.slow
def test_a_worker_killed_mid_run_ends_it_naming_the_device(tmp_path):
    s = scenario(tmp_path, devices=3, requests=200, interval="50ms")
    out = tmp_path / "out"
    emu_run = EmulatedRun(s, out / "emu", quiet)
    killed_at: list[float] = []

    def kill_after_two_requests() -> None:
        done = out / "emu" / "host" / "requests.jsonl"
        while not (done.is_file() and len(done.read_text().splitlines()) >= 2):
            time.sleep(0.05)
        victim = next(p for p in emu_run.processes.workers() if p.device == "c")
        killed_at.append(time.monotonic())
        os.kill(victim.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_after_two_requests, daemon=True)
    killer.start()
    with TraceWriter(out, "emu", "halp") as writer:
        with pytest.raises(BackendError, match="worker on c") as err:
            emu_run.run(policy_for(s), writer)
    ended = time.monotonic()

    message = str(err.value)
    assert "\n" not in message and "worker on c" in message
    assert ended - killed_at[0] < 15.0
    finished = read_trace_dir(out).requests
    assert len(finished) >= 2  # what finished before the kill is on disk
    assert len(writer.trace.requests) == len(finished)


GARBAGE = textwrap.dedent("""
    import sys, zmq
    from halp.runtime.wire import KeyKind, Message, MsgType, encode
    address = sys.argv[1]
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 5000)  # deliver everything before closing
    sock.connect(address)
    sock.send_multipart([b"\\x00garbage" * 100])                      # not a message
    sock.send_multipart([b"HALP\\x01", b"", b"short"])                 # truncated
    head, payload, mac = encode(Message(MsgType.NONCE_REQ, sender="a", kind=KeyKind.TOKEN),
                                b"the wrong token, long enough")
    sock.send_multipart([head, payload, mac])                         # wrong token
    sock.send_multipart([head[:-3], payload, mac])                    # torn header
    sock.send_multipart([bytes(range(256)) * 4000])                   # one big junk frame
    print("sent garbage")
    sock.close()
    ctx.term()
""")


@pytest.mark.slow
def test_a_worker_fed_garbage_keeps_serving(tmp_path):
    s = scenario(tmp_path, devices=2, requests=2)
    emu_run = EmulatedRun(s, tmp_path / "run", quiet)
    attacks: list[str] = []

    def attack(net: EmulatedNetwork) -> None:
        endpoint = emu_run.topology.node("b").endpoint
        proc = net.node("a").popen([sys.executable, "-c", GARBAGE, endpoint], text=True,
                                   cwd=str(REPO))
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        attacks.append(out)

    trace = emu_run.run(policy_for(s), None, before_host=attack)

    assert "sent garbage" in attacks[0]
    assert len(trace.requests) == 2
    assert all(r.extra["relative_error"] <= TOLERANCE for r in trace.requests)
    log = (tmp_path / "run" / "worker-b.log").read_text()
    assert log.count("rejected") == 5  # it saw each piece of garbage, said so, and went on


RUNNER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from emu.backend import EmulatorBackend
    from halp.errors import HalpError
    from halp.scenario import load_scenario
    from halp.serving import policy_for
    from halp.trace import TraceWriter
    s = load_scenario(sys.argv[1])
    try:
        with TraceWriter(Path(sys.argv[2]), "emu", s.method.name) as w:
            EmulatorBackend(log=lambda line: print(line, flush=True)).run(s, policy_for(s), w)
    except HalpError as exc:
        print("ERROR", exc, flush=True)
        sys.exit(2)
""")


def test_halp_run_writes_a_relative_out_folder(tmp_path):
    """`halp run --backend emu` from where the user stands: the default `runs/...` folder is
    relative, and the device processes run in another directory."""
    scenario(tmp_path, devices=2, requests=2)
    done = subprocess.run([sys.executable, "-m", "halp.cli", "run", "s.yaml", "--backend", "emu"],
                          capture_output=True, text=True, cwd=str(tmp_path),
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)

    assert done.returncode == 0, done.stderr[-2000:]
    (out,) = (tmp_path / "runs").iterdir()
    trace = read_trace_dir(out)
    assert [r.request for r in trace.requests] == [0, 1]
    assert all(r.max_abs_error <= TOLERANCE for r in trace.requests)


@pytest.mark.slow
def test_compare_on_the_emulator_measures_its_stand_alone_reference(tmp_path, monkeypatch,
                                                                     capsys):
    scenario(tmp_path, devices=2, requests=2)
    monkeypatch.chdir(tmp_path)

    assert main(["compare", "s.yaml", "--backend", "emu", "--methods", "halp,standalone",
                 "--out", "cmp", "--json"]) == 0

    printed = capsys.readouterr()
    result = json.loads(printed.out)
    # planned at speed 0.05 of this machine, emulated at the half core cpu_share says: named
    assert "device a: cpu_share 0.5 emulates a device 2x slower" in printed.err
    assert "cpu model dilate" in printed.err  # two devices, a core each
    rows = {r["method"]: r for r in result["methods"]}
    alone = rows["standalone"]["latency_s"]["mean"]  # measured on the emulated host
    assert result["standalone_source"] == "measured" and result["standalone_latency_s"] == alone
    assert result["simulated_standalone_s"] != alone
    halp = rows["halp"]
    assert halp["standalone_source"] == "measured"
    assert halp["speedup"] == pytest.approx(alone / halp["latency_s"]["mean"])
    on_disk = json.loads((tmp_path / "cmp" / "standalone" / "report.json").read_text())
    assert on_disk["speedup"] == 1.0 and on_disk["standalone_source"] == "measured"


def test_what_cannot_be_emulated_is_refused_before_anything_is_written(tmp_path, monkeypatch,
                                                                      capsys):
    if netem_available():  # play a kernel without it: the refusal is what is tested here
        monkeypatch.setattr(emu.network, "netem_available", lambda: False)
    scenario(tmp_path)
    monkeypatch.chdir(tmp_path)
    for command in (["run", "s.yaml", "--backend", "emu"], ["validate", "s.yaml", "--out", "v"]):
        assert main([*command, "--set", "network.delay=5ms"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "netem" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


@pytest.mark.slow
def test_sigterm_mid_run_tears_everything_down(tmp_path):
    s = scenario(tmp_path, devices=2, requests=200, interval="50ms")
    path = tmp_path / "s.yaml"
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(path), str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=str(REPO))
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "request 1 " in line:
            break
    proc.send_signal(signal.SIGTERM)
    rest = "".join(seen) + proc.communicate(timeout=30)[0]

    assert proc.returncode == 2, rest
    assert "stopped by SIGTERM" in rest
    assert s.name and len(read_trace_dir(tmp_path / "out").requests) >= 2
