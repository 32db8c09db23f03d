"""The wire format and its keys: round trips, and every kind of bad message is refused."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from halp.errors import HalpError
from halp.model.graph import Range, Region
from halp.runtime import auth
from halp.runtime.clock import ClockSync, clock_identity, same_clock
from halp.runtime.wire import (
    MAC_BYTES,
    PREFIX,
    AuthError,
    KeyKind,
    Message,
    MsgType,
    WireError,
    decode,
    encode,
    mac,
)

KEY = b"k" * 32


def keys(key: bytes = KEY):
    return lambda kind, sender: key


def data_message() -> Message:
    tensor = torch.randn(1, 8, 5, 7)
    return Message(MsgType.DATA, seq=41, sender="w1", request=3, op="t7",
                   region=Region(Range(10, 15), Range(0, 7)), tensor=tensor,
                   body={"plan_id": 2})


def signed(head: bytes, payload: bytes, key: bytes = KEY) -> list[bytes]:
    return [head, payload, mac(key, head, payload)]


def raw_head(header: dict, mtype: MsgType = MsgType.DATA, kind: KeyKind = KeyKind.SESSION,
             sender: bytes = b"w1", seq: int = 0) -> bytes:
    text = json.dumps(header).encode()
    return PREFIX.pack(b"HALP", 1, int(mtype), int(kind), len(sender), len(text), seq) + sender + text


def assert_refused_as_malformed(frames: list[bytes], reason: str) -> None:
    """`decode` refuses the frames for `reason`, and does not blame a key for it."""
    with pytest.raises(WireError, match=reason) as err:
        decode(frames, keys())
    assert not isinstance(err.value, AuthError), err.value


def test_data_round_trip_keeps_every_field_and_the_exact_bytes():
    msg = data_message()

    got = decode(encode(msg, KEY), keys())

    assert (got.type, got.seq, got.sender, got.request, got.op, got.region, got.body) == \
        (msg.type, msg.seq, msg.sender, msg.request, msg.op, msg.region, msg.body)
    assert got.tensor is not None and torch.equal(got.tensor, msg.tensor)


def test_messages_without_tensor_and_unsigned_reject_round_trip():
    ping = Message(MsgType.PING, seq=5, sender="h", body={"t0": 1.5})
    reject = Message(MsgType.REJECT, kind=KeyKind.NONE, body={"reason": "bad token"})

    assert decode(encode(ping, KEY), keys()).body == {"t0": 1.5}
    assert decode(encode(reject, None), keys(b"")).body["reason"] == "bad token"


@pytest.mark.parametrize("frames, reason", [
    ([], "expected 3 frames"),
    ([b"garbage"], "expected 3 frames"),
    ([b"\x00" * 64, b"", b"\x00" * 32], "bad magic"),
    ([b"HALP\x01", b"", b"x" * 32], "truncated prefix"),
    ([b"NOPE" + b"\x00" * 60, b"", b"\x00" * 32], "bad magic"),
    ([struct.pack("!4sBBBBIQ", b"HALP", 9, 11, 2, 0, 0, 0), b"", b"\x00" * 32], "wire version 9"),
])
def test_garbage_is_refused(frames, reason):
    assert_refused_as_malformed(frames, reason)


def test_truncated_header_payload_and_mac_are_refused():
    head, payload, signature = encode(data_message(), KEY)
    payload = bytes(payload)

    assert_refused_as_malformed([head[:-3], payload, signature], "truncated header")
    assert_refused_as_malformed([head, payload, signature[:-1]], "MAC has 31 bytes")
    assert_refused_as_malformed([head, payload], "expected 3 frames")
    # A shorter payload is not parsed at all: the MAC over it no longer matches.
    with pytest.raises(AuthError, match="bad MAC"):
        decode([head, payload[:-4], signature], keys())


def test_wrong_key_and_tampering_fail_the_mac():
    head, payload, signature = encode(data_message(), KEY)
    tampered = bytearray(bytes(payload))
    tampered[0] ^= 1

    with pytest.raises(AuthError, match="bad MAC"):
        decode([head, payload, signature], keys(b"w" * 32))
    with pytest.raises(AuthError, match="bad MAC"):
        decode([head, bytes(tampered), signature], keys())
    with pytest.raises(AuthError, match="no session key"):
        decode([head, payload, signature], lambda kind, sender: None)


def test_signed_but_malformed_headers_are_refused():
    four_floats = torch.zeros(4).numpy().tobytes()
    cases = [
        ({"dtype": "int64", "shape": [2]}, four_floats, "'int64' is not allowed"),
        ({"dtype": "float32", "shape": [5]}, four_floats, "needs 20"),  # shape x dtype != payload
        ({"dtype": "float32", "shape": [-4]}, four_floats, "bad shape"),
        ({"dtype": "float32", "shape": [1] * 9}, four_floats, "bad shape"),
        ({}, four_floats, "no dtype and shape"),
        ({"region": [[5, 2], [0, 1]]}, b"", "bad region"),
        ({"request": "three"}, b"", "request id"),
        ({"surprise": 1}, b"", "known keys"),
    ]
    for header, payload, reason in cases:
        assert_refused_as_malformed(signed(raw_head(header), payload), reason)
    not_json = PREFIX.pack(b"HALP", 1, int(MsgType.PING), 2, 0, 3, 0) + b"{{{"
    assert_refused_as_malformed(signed(not_json, b""), "not JSON")


def test_a_message_type_only_takes_its_own_key_kind():
    head = raw_head({}, MsgType.PLAN, KeyKind.TOKEN)
    assert_refused_as_malformed(signed(head, b""), "PLAN may not be signed with a TOKEN key")
    unsigned_data = raw_head({}, MsgType.DATA, KeyKind.NONE)
    assert_refused_as_malformed([unsigned_data, b"", bytes(MAC_BYTES)],
                                "DATA may not be signed with a NONE key")


def test_keys_differ_per_run_and_replays_are_refused():
    token = b"t" * 32
    w, r1, r2 = auth.new_nonce(), auth.new_nonce(), auth.new_nonce()
    assert auth.session_key(token, w, r1) != auth.session_key(token, w, r2)
    assert auth.peer_key(token, r1, "w1", "w2") != auth.peer_key(token, r1, "w2", "w1")
    guard = auth.ReplayGuard()
    guard.check(0)
    guard.check(3)
    for seq in (3, 1):
        with pytest.raises(WireError, match="replayed"):
            guard.check(seq)


def test_a_token_file_is_private_and_a_short_or_missing_one_is_refused(tmp_path):
    path = tmp_path / "token"
    token = auth.write_token(path)
    assert auth.load_token(path) == token and (path.stat().st_mode & 0o077) == 0
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(HalpError, match="at least"):
        auth.load_token(tmp_path / "short")
    with pytest.raises(HalpError, match="cannot read"):
        auth.load_token(tmp_path / "missing")


def test_clock_estimate_takes_the_tightest_round():
    sync = ClockSync()
    sync.add(t0=10.0, tw=105.0, t1=10.2)  # slow round: offset -94.9 +- 0.1
    sync.add(t0=11.0, tw=106.001, t1=11.002)  # tight round: offset -95.0 +- 0.001

    offset, uncertainty = sync.estimate()

    assert offset == pytest.approx(-95.0) and uncertainty == pytest.approx(0.001)
    assert same_clock(clock_identity(), clock_identity())
    assert not same_clock(clock_identity(), {"implementation": "x", "boot_id": "y"})
