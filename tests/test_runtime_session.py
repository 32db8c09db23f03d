"""A HELLO opens a session only if it answers this worker's nonce and names the device it
plays; the session signs each connection's messages with a sequence number of its own."""

from __future__ import annotations

import pytest

from halp.model.zoo import ModelSpec
from halp.runtime import auth
from halp.runtime.device import spec_to_dict
from halp.runtime.session import read_hello
from halp.runtime.wire import KeyKind, Message, MsgType, WireError, decode

TOKEN = b"t" * 32
HOST, CONTROL = b"host-connection", b"control-connection"


def hello_body(nonce: str, **changes: object) -> dict:
    body = {"nonce": nonce, "run": auth.new_nonce(), "device": "w1", "host": "h",
            "peers": {"w2": "tcp://10.0.0.3:5555"}, "threads": 2, "control": CONTROL.hex(),
            "spec": spec_to_dict(ModelSpec("mobilenet_v1", width=0.25, resolution=128))}
    return {**body, **changes}


def test_a_hello_that_answers_the_nonce_opens_a_session_with_the_hosts_key():
    nonce = auth.new_nonce()
    body = hello_body(nonce)
    hello = read_hello(body, nonce, "w1")
    assert (hello.device, hello.host, hello.threads) == ("w1", "h", 2)
    assert hello.spec.variant == "0.25_128"
    session = hello.session(HOST, TOKEN)
    assert session.key == auth.session_key(TOKEN, nonce, body["run"])
    assert session.peers == {"w2": "tcp://10.0.0.3:5555"} and session.control == CONTROL


def test_each_connection_to_the_host_counts_its_own_messages():
    nonce = auth.new_nonce()
    session = read_hello(hello_body(nonce), nonce, None).session(HOST, TOKEN)
    seqs = []
    for via in (None, CONTROL, None):
        identity, frames = session.seal(Message(MsgType.PONG), via)
        msg = decode(frames, lambda kind, sender: session.key)
        assert identity == (via or HOST)
        assert (msg.sender, msg.kind) == ("w1", KeyKind.SESSION)
        seqs.append(msg.seq)
    assert seqs == [0, 0, 1]


@pytest.mark.parametrize("expected, changes, error", [
    (None, {}, "stale or unknown nonce"),
    ("another", {}, "stale or unknown nonce"),
    ("mine", {"threads": 0}, "lacks device, host, peers or threads"),
    ("mine", {"device": "w9"}, "started as 'w1', but the host calls it 'w9'"),
])
def test_a_hello_that_is_stale_malformed_or_for_another_device_is_refused(expected, changes,
                                                                          error):
    nonce = auth.new_nonce()
    answer = {"mine": nonce, "another": auth.new_nonce(), None: None}[expected]
    with pytest.raises(WireError, match=error):
        read_hello(hello_body(nonce, **changes), answer, "w1")


@pytest.mark.parametrize("control", ["not hex", "", HOST.hex()])
def test_a_hello_must_name_a_control_connection_of_its_own(control):
    nonce = auth.new_nonce()
    hello = read_hello(hello_body(nonce, control=control), nonce, "w1")
    with pytest.raises(WireError, match="control connection"):
        hello.session(HOST, TOKEN)
