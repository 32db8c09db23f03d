"""The emulated network on real Mininet: links carry what they are shaped for, a shared channel
is one capacity, traces change rates live, and nothing outlives the network (root only)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import pytest
from conftest import write_scenario

from emu.network import (
    PM_QOS_DEVICE,
    SEGMENT_MAX_BYTES,
    EmulatedNetwork,
    LiveRates,
    netem_available,
)
from emu.topology import describe
from halp.errors import BackendError
from halp.network import wire_bits
from halp.scenario import load_scenario

from emu_support import emu_required, machine_state  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.emu, pytest.mark.usefixtures("emu_required", "machine_state")]

SCENARIO = """\
name: net
model: {name: mobilenet_v1, width: 0.25, resolution: 128}
devices:
  - {name: a, role: host, profile: this-machine, cpu_share: 0.5}
  - {name: b, profile: this-machine, cpu_share: 0.5}
  - {name: c, profile: this-machine, cpu_share: 0.5}
network: NETWORK
method: {name: halp}
"""


def topology(tmp_path, network: str, tag: str):
    (tmp_path / "b.csv").write_text("time_s,bandwidth_bps\n0,20e6\n0.5,5e6\n")
    path = write_scenario(tmp_path, SCENARIO.replace("NETWORK", network))
    return describe(load_scenario(path), tag, cores=2)


RECEIVER = textwrap.dedent("""
    import json, socket, sys, threading, time
    port, expected = int(sys.argv[1]), int(sys.argv[2])
    server = socket.create_server(("0.0.0.0", port))
    print("ready", flush=True)
    times, total, lock = [], [0], threading.Lock()

    def drain(conn):
        first = None
        while True:
            data = conn.recv(1 << 16)
            if not data:
                break
            now = time.monotonic()
            first = first or now
            with lock:
                total[0] += len(data)
        times.append((first, now))
        conn.close()

    threads = []
    for _ in range(expected):
        conn, _ = server.accept()
        threads.append(threading.Thread(target=drain, args=(conn,)))
        threads[-1].start()
    for t in threads:
        t.join()
    print(json.dumps({"bytes": total[0], "first": min(a for a, _ in times),
                      "last": max(b for _, b in times)}), flush=True)
""")

SENDER = textwrap.dedent("""
    import socket, sys
    host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with socket.create_connection((host, port)) as conn:
        conn.sendall(bytes(size))
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)
""")


def transfer(net: EmulatedNetwork, receiver: str, senders: list[str], nbytes: int) -> float:
    """Send `nbytes` from each sender to the receiver at once; the payload bits per second the
    receiver saw, from the first byte to the last, on its own clock."""
    rx = net.node(receiver).popen([sys.executable, "-c", RECEIVER, "5300", str(len(senders))],
                                  text=True)
    assert rx.stdout is not None
    assert rx.stdout.readline().strip() == "ready"
    ip = net.topology.node(receiver).ip
    txs = [net.node(s).popen([sys.executable, "-c", SENDER, ip, "5300", str(nbytes)])
           for s in senders]
    result = json.loads(rx.communicate(timeout=120)[0])
    for tx in txs:
        tx.wait(timeout=30)
    assert result["bytes"] == nbytes * len(senders)
    return result["bytes"] * 8 / (result["last"] - result["first"])


def test_a_link_carries_n_megabytes_in_the_ideal_time_both_ways(tmp_path):
    topo = topology(tmp_path, "{kind: star, bandwidth: 20Mbps}", "nt1")
    with EmulatedNetwork(topo) as net:
        up = transfer(net, "a", ["b"], 4_000_000)
        down = transfer(net, "b", ["a"], 4_000_000)

    # Payload rate: the link's rate less the frames' headers (95.6%), give or take 5%.
    assert up == pytest.approx(20e6 * 8 / wire_bits(1), rel=0.05)
    assert down == pytest.approx(20e6 * 8 / wire_bits(1), rel=0.05)


ECHO = textwrap.dedent("""
    import socket, sys
    server = socket.create_server(("0.0.0.0", int(sys.argv[1])))
    print("ready", flush=True)
    conn, _ = server.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    size = int(sys.argv[2])
    while True:
        left = size
        while left:
            data = conn.recv(min(left, 1 << 16))
            if not data:
                sys.exit(0)
            left -= len(data)
        conn.sendall(b"k")
""")

BLOCKS = textwrap.dedent("""
    import socket, statistics, sys, time
    host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    conn = socket.create_connection((host, port))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    seconds = []
    for i in range(12):
        time.sleep(0.05)  # idle, as between a request's blocks
        t0 = time.perf_counter()
        conn.sendall(bytes(size))
        conn.recv(1)
        seconds.append(time.perf_counter() - t0)
    print(statistics.median(seconds[2:]), flush=True)
""")


def test_a_block_after_an_idle_gap_takes_its_frames_time_on_the_link(tmp_path):
    # Prepare: 57 kB blocks, one at a time, each after 50 ms idle, on a 100 Mbps link. With
    # TCP's default 64 kB segments, HTB passed the whole block as one: 0.07-0.7 ms, not 4.8.
    topo = topology(tmp_path, "{kind: star, bandwidth: 100Mbps}", "nt9")
    size = 57_344
    with EmulatedNetwork(topo) as net:
        rx = net.node("b").popen([sys.executable, "-c", ECHO, "5301", str(size)], text=True)
        assert rx.stdout is not None and rx.stdout.readline().strip() == "ready"
        tx = net.node("a").popen([sys.executable, "-c", BLOCKS, topo.node("b").ip, "5301",
                                  str(size)], stdout=subprocess.PIPE, text=True)
        seconds = float(tx.communicate(timeout=60)[0])
        rx.wait(timeout=10)

    # Assert: its frames' bits at the link's rate, as the simulator charges them, less at most
    # the last segment's (HTB lets a segment through whole), and 15% of slack either way.
    frames_s = wire_bits(size) / 100e6
    assert 0.85 * (frames_s - wire_bits(SEGMENT_MAX_BYTES) / 100e6) <= seconds <= 1.15 * frames_s


def test_star_links_are_independent_and_a_shared_channel_is_one_capacity(tmp_path):
    star = topology(tmp_path, "{kind: star, bandwidth: 10Mbps}", "nt2")
    with EmulatedNetwork(star) as net:
        apart = transfer(net, "a", ["b", "c"], 2_000_000)
    shared = topology(tmp_path, "{kind: shared, bandwidth: 10Mbps}", "nt3")
    with EmulatedNetwork(shared) as net:
        together = transfer(net, "a", ["b", "c"], 2_000_000)

    assert apart == pytest.approx(20e6, rel=0.15)  # two links of 10 Mbps
    assert together == pytest.approx(10e6, rel=0.15)  # one channel of 10 Mbps


def test_a_bandwidth_trace_changes_the_rate_live_and_stops(tmp_path):
    topo = topology(tmp_path, "{kind: star, bandwidth: 20Mbps, links: {b: {trace: b.csv}}}", "nt4")
    with EmulatedNetwork(topo) as net:
        live = LiveRates(net)
        assert net.rates("b") == {"hnt41-eth0": 20e6, net.switch_port["b"]: 20e6}
        live.start(time.monotonic())
        time.sleep(0.9)
        rates = net.rates("b")
        live.stop()

    assert set(rates.values()) == {5e6}
    assert [(d, r) for _, d, r in live.applied] == [("b", 5e6)]
    assert 0.5 <= live.applied[0][0] < 0.8


def cpu_latency_target() -> int:
    """The machine's current PM QoS CPU latency target, in microseconds."""
    return struct.unpack("i", PM_QOS_DEVICE.read_bytes()[:4])[0]


@pytest.mark.parametrize("awake", [True, False])
def test_idle_cpus_poll_while_the_network_is_up_and_only_then(tmp_path, awake):
    topo = replace(topology(tmp_path, "{kind: star, bandwidth: 20Mbps}", "nt7"),
                   keep_cpus_awake=awake)
    before = cpu_latency_target()
    with EmulatedNetwork(topo):
        during = cpu_latency_target()
    assert during == (0 if awake else before)
    assert cpu_latency_target() == before


LISTENER = "import socket, sys, time; s = socket.create_server(('0.0.0.0', int(sys.argv[1]))); time.sleep(60)"
CONNECT = ("import socket, sys, time\n"
           "best = 1e9\n"
           "for _ in range(20):\n"
           "    t0 = time.perf_counter()\n"
           "    try:\n"
           "        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()\n"
           "    except OSError:\n"
           "        time.sleep(0.1)\n"
           "        continue\n"
           "    best = min(best, time.perf_counter() - t0)\n"
           "print(best * 1e3)")  # a TCP handshake: one round trip, in ms


def test_delay_is_emulated_with_netem_and_refused_in_one_line_without(tmp_path):
    topo = topology(tmp_path, "{kind: star, bandwidth: 20Mbps, delay: 25ms}", "nt5")
    if netem_available():  # a host-secondary round trip crosses the secondary's link twice
        with EmulatedNetwork(topo) as net:
            b = next(n for n in topo.nodes if n.device == "b")
            listener = net.node("b").popen([sys.executable, "-c", LISTENER, "5301"])
            try:
                out = net.node("a").popen([sys.executable, "-c", CONNECT, b.ip, "5301"],
                                          stdout=subprocess.PIPE, text=True).communicate()[0]
            finally:
                listener.kill()
                listener.wait()
        assert 50.0 <= float(out.strip().splitlines()[-1]) < 65.0, out
        return
    with pytest.raises(BackendError, match="netem") as err:
        with EmulatedNetwork(topo):
            pass
    assert "\n" not in str(err.value)


def test_a_failure_half_way_through_start_leaves_nothing(tmp_path, monkeypatch):
    topo = topology(tmp_path, "{kind: shared, bandwidth: 20Mbps}", "nt6")

    def broken(self):
        raise BackendError("checking failed on purpose")

    monkeypatch.setattr(EmulatedNetwork, "_check", broken)
    with pytest.raises(BackendError, match="on purpose"):
        with EmulatedNetwork(topo):
            pass  # never reached
