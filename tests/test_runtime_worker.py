"""A real `halp worker` refuses garbage, truncated, wrong-token and replayed messages, logs
them, and keeps serving; a host with the wrong token, the wrong name or no worker gets one line."""

from __future__ import annotations

import time

import pytest
import zmq
from runtime_support import check_trace, endpoints, scenario_text, workers

from halp.errors import BackendError
from halp.methods import prepare
from halp.model.zoo import model_digest
from halp.runtime import auth, load_token, run_host
from halp.runtime.device import spec_to_dict
from halp.runtime.wire import KeyKind, Message, MsgType, decode, encode
from halp.scenario import load_scenario
from halp.serving import policy_for
from halp.trace import TraceWriter

EQUAL = "method: {name: equal, cuts: [0, 9, 27]}"


class Raw:
    """A bare DEALER connection to a worker, speaking the wire format by hand."""

    def __init__(self, ctx: zmq.Context, address: str):
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTING_ID, auth.new_nonce().encode())
        self.sock.connect(address)

    def send(self, frames) -> None:
        self.sock.send_multipart([bytes(f) for f in frames])

    def recv(self, timeout_s: float = 5.0):
        if self.sock.poll(int(timeout_s * 1000)):
            return self.sock.recv_multipart()
        return None


def handshake(raw: Raw, control: Raw, token: bytes, spec: dict) -> tuple[bytes, list, dict]:
    """NONCE_REQ, NONCE, HELLO, WELCOME by hand; returns the session key, the HELLO frames and
    the welcome body."""
    challenge = auth.new_nonce()
    raw.send(encode(Message(MsgType.NONCE_REQ, sender="h", kind=KeyKind.TOKEN,
                            body={"challenge": challenge}), token))
    nonce = decode(raw.recv(), lambda k, s: token)
    assert nonce.type == MsgType.NONCE and nonce.body["challenge"] == challenge
    run = auth.new_nonce()
    hello = encode(Message(MsgType.HELLO, sender="h", kind=KeyKind.TOKEN, body={
        "nonce": nonce.body["nonce"], "run": run, "device": "w1", "host": "h", "peers": {},
        "threads": 1, "spec": spec, "control": control.sock.getsockopt(zmq.ROUTING_ID).hex()}),
        token)
    raw.send(hello)
    key = auth.session_key(token, nonce.body["nonce"], run)
    welcome = decode(raw.recv(30.0), lambda k, s: key)
    assert welcome.type == MsgType.WELCOME
    return key, [bytes(f) for f in hello], welcome.body


def ping(key: bytes, seq: int) -> list:
    return [bytes(f) for f in encode(Message(MsgType.PING, seq=seq, sender="h",
                                             body={"t0": time.perf_counter()}), key)]


def test_worker_refuses_bad_messages_and_keeps_serving(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(scenario_text(devices=2, extra=EQUAL).replace("method: {name: halp}\n", ""))
    scenario = load_scenario(path)
    prepared = prepare(scenario)
    ctx = zmq.Context()
    try:
        with workers(tmp_path, ["w1"]) as (started, token_file):
            token = load_token(token_file)
            address = started[0].address
            host, control = Raw(ctx, address), Raw(ctx, address)
            key, hello, welcome = handshake(host, control, token, spec_to_dict(prepared.spec))
            assert welcome["digest"] == model_digest(prepared.model)

            # Pings answer on the control connection; a replayed ping is dropped.
            first = ping(key, 0)
            control.send(first)
            assert decode(control.recv(), lambda k, s: key).type == MsgType.PONG
            control.send(first)
            assert control.recv(0.5) is None
            control.send(ping(key, 1))
            pong = decode(control.recv(), lambda k, s: key)
            assert pong.type == MsgType.PONG and pong.seq == 1

            # Garbage and truncated messages: dropped without an answer.
            head, payload, signature = ping(key, 2)
            for frames in ([b"garbage"], [b"HALP"], [head[:-2], payload, signature],
                           [head, payload], [head, payload, signature[:16]]):
                host.send(frames)
            assert host.recv(0.5) is None

            # Wrong token: the handshake is refused, and said so.
            stranger = Raw(ctx, address)
            stranger.send(encode(Message(MsgType.NONCE_REQ, sender="h", kind=KeyKind.TOKEN,
                                         body={"challenge": auth.new_nonce()}), b"x" * 32))
            reject = decode(stranger.recv(), lambda k, s: None)
            assert reject.type == MsgType.REJECT and "bad MAC" in reject.body["reason"]

            # A hello replayed on a new connection (a later run) is refused: its nonce is spent.
            replay = Raw(ctx, address)
            replay.send(hello)
            reject = decode(replay.recv(), lambda k, s: None)
            assert reject.type == MsgType.REJECT and "nonce" in reject.body["reason"]
            # A session message replayed from another connection has no session there.
            replay.send(first)
            assert replay.recv(0.5) is None

            # Still serving: a real host runs a plan on it, and outputs are exact.
            policy = policy_for(scenario)
            with TraceWriter(tmp_path / "out", "emu", "equal") as writer:
                trace = run_host(scenario, policy, writer, endpoints(started), token, 30.0)
            check_trace(trace, policy.served()[0].plan, 3)
            for sock in (host, control, stranger, replay):
                sock.sock.close(0)
            log = started[0].log()
            assert started[0].stop() == 0
        assert log.count("rejected a message") >= 8
    finally:
        ctx.destroy(linger=0)


def test_host_gets_one_line_for_wrong_token_wrong_name_and_no_worker(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(scenario_text(devices=2, requests=1, extra=EQUAL)
                    .replace("method: {name: halp}\n", ""))
    scenario = load_scenario(path)
    policy = policy_for(scenario)
    with workers(tmp_path, ["w1"]) as (started, token_file):
        with pytest.raises(BackendError, match="w1 .*rejected the handshake: .*bad MAC"):
            run_host(scenario, policy, TraceWriter(None, "emu", "equal"), endpoints(started),
                     b"not-the-token-0123456789", 10.0)
        # A worker started as w1 refuses to play another device.
        renamed = scenario.with_values({"devices.w1.name": "w9"})
        with pytest.raises(BackendError, match="started as 'w1'.*calls it 'w9'"):
            run_host(renamed, policy_for(renamed), TraceWriter(None, "emu", "equal"),
                     {"w9": started[0].address}, load_token(token_file), 10.0)
        assert started[0].popen.poll() is None
    t0 = time.monotonic()
    with pytest.raises(BackendError, match=r"device w1 at tcp://127.0.0.1:9 did not answer"):
        run_host(scenario, policy, TraceWriter(None, "emu", "equal"),
                 {"w1": "127.0.0.1:9"}, b"t" * 32, 1.5)
    assert time.monotonic() - t0 < 5.0
