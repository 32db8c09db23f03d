"""What one block costs the runtime beyond its bits on the wire: a profile's message terms.

A block in a run does not go from socket to socket. The device's sender thread wakes when the
block exists, hands it to the I/O thread through a `Mailbox`, which signs it (`wire.encode`)
and sends it; the peer's I/O thread receives it, checks it (`wire.decode`) and puts it in the
`BlockStore`, which wakes the compute thread waiting for it. `measure_message_overhead_s`
times that path, with the runtime's own pieces, between two processes, each block after an
idle gap as a run's blocks are: half the median round trip of a small block. On this VM on
2026-12-07: 530 us, where a bare 64-byte ZeroMQ REQ/REP took 215 us; in emulated runs a small
block took 0.7-0.9 ms from its input to its consumer.

Signing and checking read every byte once more on each side, before the first bit leaves and
after the last arrives, so they add to the wire time rather than overlap it:
`measure_message_s_per_byte` is what `wire.encode` + `wire.decode` take per byte (here ~1.6 ns,
2% of 100 Mbps, 20% of 1 Gbps).

Run as `python -m halp.latency.hop N` it is the peer: it answers N blocks, then exits.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
import torch
import zmq

from halp.errors import HalpError
from halp.runtime.device import Aborted, BlockStore, Mailbox
from halp.runtime.wire import Message, MsgType, configure, decode, encode

KEY = b"profile-hop-key-" * 2  # both ends are this machine's own processes
WARMUP = 10


def _node(sock: zmq.Socket, blocks: int, payload: torch.Tensor, gap_s: float | None) -> list[float]:
    """One device's side of `blocks` round trips. With `gap_s` it begins each one, after that
    idle gap, and returns their times; without, it answers each block it receives."""
    outbox, store = Mailbox(), BlockStore()
    times: list[float] = []

    def compute() -> None:  # the thread that makes blocks and waits for them, as a device's does
        with contextlib.suppress(Aborted):  # the I/O loop failed
            for i in range(blocks):
                if gap_s is not None:
                    time.sleep(gap_s)
                    t0 = time.perf_counter()
                    outbox.put(i)
                store.wait(i, ["block"])
                if gap_s is None:
                    outbox.put(i)
                else:
                    times.append(time.perf_counter() - t0)

    thread = threading.Thread(target=compute, name="hop-compute", daemon=True)
    thread.start()
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(outbox, zmq.POLLIN)
    received = sent = 0
    try:
        while received < blocks or sent < blocks:
            events = dict(poller.poll(5000))
            if not events:
                raise HalpError("the peer stopped answering")
            if outbox.fileno() in events:
                for i in outbox.drain():
                    sock.send_multipart(encode(Message(MsgType.DATA, request=i, op="block",
                                                       tensor=payload), KEY), copy=False)
                    sent += 1
            if sock in events:
                frames = sock.recv_multipart(copy=False)
                msg = decode([f.buffer for f in frames], lambda kind, sender: KEY)
                assert msg.request is not None and msg.tensor is not None
                store.put(msg.request, "block", (None, msg.tensor))  # type: ignore[arg-type]
                received += 1
    except BaseException:
        store.fail("the measurement failed")  # wakes the compute thread
        raise
    finally:
        thread.join(timeout=5.0)
        outbox.close()
    return times


def measure_message_overhead_s(round_trips: int = 60, payload_bytes: int = 64,
                               gap_s: float = 0.01) -> float:
    """Half the median round trip of a small block along the runtime's path (see the module),
    to another process and back, each after `gap_s` idle."""
    blocks = WARMUP + round_trips
    peer = subprocess.Popen([sys.executable, "-m", "halp.latency.hop", str(blocks),
                             str(payload_bytes)], stdout=subprocess.PIPE, text=True)
    context = zmq.Context()
    sock = context.socket(zmq.PAIR)
    configure(sock)
    try:
        assert peer.stdout is not None
        sock.connect(f"tcp://127.0.0.1:{int(peer.stdout.readline())}")
        times = _node(sock, blocks, _payload(payload_bytes), gap_s)[WARMUP:]
    except (ValueError, zmq.ZMQError, HalpError) as exc:
        raise HalpError(f"measuring the message overhead: the peer process failed ({exc})") from None
    finally:
        sock.close(0)
        context.term()
        try:
            peer.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            peer.kill()
            peer.wait()
    return statistics.median(times) / 2.0


def measure_message_s_per_byte(sizes: tuple[int, ...] = (16_384, 65_536, 262_144, 1_048_576),
                               repeats: int = 15) -> float:
    """Seconds per payload byte of signing a block and checking it (`wire.encode` then
    `wire.decode`): the least-squares slope over `sizes`, the fastest of `repeats` each."""
    seconds = []
    for size in sizes:
        msg = Message(MsgType.DATA, request=0, op="block", tensor=_payload(size))
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            frames = [bytes(f) for f in encode(msg, KEY)]  # bytes: as they arrive, not views
            decode(frames, lambda kind, sender: KEY)
            best = min(best, time.perf_counter() - t0)
        seconds.append(best)
    slope = float(np.polyfit(np.array(sizes, dtype=float), np.array(seconds), 1)[0])
    return max(slope, 0.0)


def _payload(nbytes: int) -> torch.Tensor:
    return torch.zeros(max(1, nbytes // 4), dtype=torch.float32)


def _serve(blocks: int, payload_bytes: int) -> None:
    context = zmq.Context()
    sock = context.socket(zmq.PAIR)
    configure(sock)
    print(sock.bind_to_random_port("tcp://127.0.0.1"), flush=True)
    try:
        _node(sock, blocks, _payload(payload_bytes), None)
    finally:
        sock.close(0)
        context.term()


if __name__ == "__main__":
    try:
        _serve(int(sys.argv[1]), int(sys.argv[2]))
    except HalpError:  # the measuring process went away; it says what failed
        sys.exit(1)
