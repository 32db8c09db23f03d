"""Message framing: a fixed binary prefix, a JSON header, the raw tensor bytes and an HMAC.

Every message is three ZeroMQ frames (a ROUTER socket adds the peer's identity in front):

    frame 0  prefix + sender + JSON header
             prefix = "!4sBBBBIQ": magic b"HALP", version, message type, key kind,
                      sender name length, JSON length, sequence number   (20 bytes)
             sender = the sending device's name, ASCII (at most 32 bytes)
             JSON   = {"request", "op", "region", "dtype", "shape", "body"}, each optional
    frame 1  payload: the tensor's bytes, little-endian, C order (empty when there is none)
    frame 2  HMAC-SHA256(key, frame 0 || frame 1), 32 bytes

The key kind says which key signed it: the shared token (`TOKEN`, the handshake only), the
session key of a host and a worker (`SESSION`), the key of a pair of workers (`PEER`), or none
(`NONE`, only for `REJECT`, which tells a host its handshake failed). Nothing is ever pickled:
`decode` checks the frame count, every length, the MAC (before it parses any JSON), the
header's types, the dtype against `DTYPES`, and that the payload is exactly shape x dtype
bytes; anything else raises `WireError` with one line saying what was wrong (`AuthError`, a
subclass, when the message is well formed but no key here signed it). `configure` sizes a
socket for these messages.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np
import torch
import zmq

from halp.errors import HalpError
from halp.model.graph import Range, Region

MAGIC = b"HALP"
VERSION = 1
PREFIX = struct.Struct("!4sBBBBIQ")
MAC_BYTES = 32
MAX_NAME_BYTES = 32
MAX_HEADER_BYTES = 4 << 20  # JSON header (a plan travels in it)
MAX_PAYLOAD_BYTES = 256 << 20  # the largest feature map of VGG-16 is 12.8 MB
MAX_DIMS = 6
MAX_DIM = 1 << 20
MAX_SEQ = (1 << 63) - 1
DTYPES: dict[str, tuple[np.dtype, torch.dtype]] = {
    "float32": (np.dtype("<f4"), torch.float32),
    "float16": (np.dtype("<f2"), torch.float16),
    "float64": (np.dtype("<f8"), torch.float64),
}
_NAME = re.compile(r"^[A-Za-z0-9_.-]*$")
_HEADER_KEYS = {"request", "op", "region", "dtype", "shape", "body"}


class WireError(HalpError):
    """A message that cannot be trusted or understood: garbage, truncated, bad MAC, replayed."""


class AuthError(WireError):
    """A well-formed message that no key here signed (wrong token, or another run's key)."""


class MsgType(IntEnum):
    NONCE_REQ = 1  # host -> worker: please give me a fresh nonce            (token)
    NONCE = 2  # worker -> host: here is one, for this connection only       (token)
    HELLO = 3  # host -> worker: run nonce, device name, model spec, peers   (token)
    WELCOME = 4  # worker -> host: model digest, clock identity               (session)
    REJECT = 5  # worker -> host: your handshake failed, and why              (none)
    PING = 6  # host -> worker: heartbeat and clock probe                    (session)
    PONG = 7  # worker -> host: the worker's clock when the ping arrived      (session)
    PLAN = 8  # host -> worker: install a plan and its model spec            (session)
    PLAN_OK = 9  # worker -> host: installed, with the model digest           (session)
    START = 10  # host -> worker: request r runs plan p                      (session)
    DATA = 11  # a block of a transfer op                          (session or peer)
    REPORT = 12  # worker -> host: op times of request r on the worker clock  (session)
    FAIL = 13  # worker -> host: an op of request r failed                   (session)
    RESET = 14  # host -> worker: drop requests in flight                     (session)
    BYE = 15  # host -> worker: the run is over                              (session)
    BYE_OK = 16  # worker -> host: state dropped, still serving               (session)


class KeyKind(IntEnum):
    NONE = 0
    TOKEN = 1
    SESSION = 2
    PEER = 3


_HANDSHAKE = {MsgType.NONCE_REQ, MsgType.NONCE, MsgType.HELLO}
ALLOWED_KEYS: dict[MsgType, frozenset[KeyKind]] = {
    t: frozenset({KeyKind.TOKEN}) if t in _HANDSHAKE
    else frozenset({KeyKind.NONE}) if t == MsgType.REJECT
    else frozenset({KeyKind.SESSION, KeyKind.PEER}) if t == MsgType.DATA
    else frozenset({KeyKind.SESSION})
    for t in MsgType
}


@dataclass
class Message:
    """One decoded message. `tensor` and `region` travel with DATA; `body` is free JSON."""

    type: MsgType
    seq: int = 0
    sender: str = ""
    kind: KeyKind = KeyKind.SESSION
    request: int | None = None
    op: str | None = None
    region: Region | None = None
    tensor: torch.Tensor | None = None
    body: dict[str, Any] = field(default_factory=dict)


def mac(key: bytes, head: bytes | memoryview, payload: bytes | memoryview) -> bytes:
    h = hmac.new(key, digestmod=hashlib.sha256)
    h.update(head)
    h.update(payload)
    return h.digest()


def encode(msg: Message, key: bytes | None) -> list[bytes | memoryview]:
    """The frames of `msg`, signed with `key` (None only for `KeyKind.NONE`)."""
    header: dict[str, Any] = {}
    if msg.request is not None:
        header["request"] = int(msg.request)
    if msg.op is not None:
        header["op"] = msg.op
    if msg.region is not None:
        header["region"] = [[msg.region.rows.start, msg.region.rows.stop],
                            [msg.region.cols.start, msg.region.cols.stop]]
    payload: bytes | memoryview = b""
    if msg.tensor is not None:
        t = msg.tensor.detach()
        name = next((n for n, (_, td) in DTYPES.items() if td == t.dtype), None)
        if name is None:
            raise WireError(f"dtype {t.dtype} cannot go on the wire; allowed: {', '.join(DTYPES)}")
        array = t.contiguous().cpu().numpy()
        header["dtype"], header["shape"] = name, list(array.shape)
        payload = memoryview(np.ascontiguousarray(array, dtype=DTYPES[name][0])).cast("B")  # type: ignore[arg-type]
    if msg.body:
        header["body"] = msg.body
    text = json.dumps(header, separators=(",", ":")).encode()
    sender = msg.sender.encode("ascii")
    if len(sender) > MAX_NAME_BYTES or not _NAME.match(msg.sender):
        raise WireError(f"sender name {msg.sender!r} is not a short ASCII name")
    if len(text) > MAX_HEADER_BYTES or len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError(f"message too large ({len(text)} B header, {len(payload)} B payload)")
    if not 0 <= msg.seq <= MAX_SEQ:
        raise WireError(f"sequence number {msg.seq} out of range")
    head = PREFIX.pack(MAGIC, VERSION, int(msg.type), int(msg.kind), len(sender), len(text),
                       msg.seq) + sender + text
    if msg.kind == KeyKind.NONE:
        signature = bytes(MAC_BYTES)
    else:
        if not key:
            raise WireError(f"{msg.type.name} needs a key to sign it")
        signature = mac(key, head, payload)
    return [head, payload, signature]


KeyLookup = Callable[[KeyKind, str], "bytes | None"]


def decode(frames: Sequence[Any], key_for: KeyLookup) -> Message:
    """Check and parse the frames of one message; `key_for(kind, sender)` gives the key that
    must have signed it (None: no such key here, and the message is rejected)."""
    if len(frames) != 3:
        raise WireError(f"expected 3 frames, got {len(frames)}")
    try:
        head, payload, signature = (memoryview(f).cast("B") if not isinstance(f, bytes) else f
                                    for f in frames)
    except TypeError:
        raise WireError("frames are not byte buffers") from None
    if len(head) < PREFIX.size:
        raise WireError(f"truncated prefix ({len(head)} of {PREFIX.size} bytes)")
    magic, version, type_code, kind_code, name_len, json_len, seq = PREFIX.unpack_from(head)
    if magic != MAGIC:
        raise WireError("not a halp message (bad magic)")
    if version != VERSION:
        raise WireError(f"wire version {version}, this side speaks {VERSION}")
    try:
        mtype, kind = MsgType(type_code), KeyKind(kind_code)
    except ValueError:
        raise WireError(f"unknown message type {type_code} or key kind {kind_code}") from None
    if name_len > MAX_NAME_BYTES or json_len > MAX_HEADER_BYTES:
        raise WireError(f"header lengths out of bounds (name {name_len}, json {json_len})")
    if len(head) != PREFIX.size + name_len + json_len:
        raise WireError(f"truncated header ({len(head)} bytes, prefix says "
                        f"{PREFIX.size + name_len + json_len})")
    if len(signature) != MAC_BYTES:
        raise WireError(f"MAC has {len(signature)} bytes, not {MAC_BYTES}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    if kind not in ALLOWED_KEYS[mtype]:
        raise WireError(f"{mtype.name} may not be signed with a {kind.name} key")
    try:
        sender = bytes(head[PREFIX.size:PREFIX.size + name_len]).decode("ascii")
    except UnicodeDecodeError:
        raise WireError("sender name is not ASCII") from None
    if not _NAME.match(sender):
        raise WireError(f"bad sender name {sender!r}")
    if kind != KeyKind.NONE:
        key = key_for(kind, sender)
        if not key:
            raise AuthError(f"{mtype.name} from {sender or '?'}: no {kind.name.lower()} key for it here "
                            "(no handshake, or a message from another run)")
        if not hmac.compare_digest(mac(key, head, payload), bytes(signature)):
            raise AuthError(f"{mtype.name} from {sender or '?'}: bad MAC (wrong token, tampered, "
                            "or from an earlier run)")
    try:
        header = json.loads(bytes(head[PREFIX.size + name_len:]))
    except (UnicodeDecodeError, ValueError):
        raise WireError("header is not JSON") from None
    if not isinstance(header, dict) or not set(header) <= _HEADER_KEYS:
        raise WireError("header is not a mapping of known keys")
    msg = Message(mtype, seq, sender, kind)
    request = header.get("request")
    if request is not None and (not isinstance(request, int) or isinstance(request, bool)
                                or abs(request) > MAX_SEQ):
        raise WireError("request id is not an integer")
    msg.request = request
    op = header.get("op")
    if op is not None and (not isinstance(op, str) or len(op) > 64):
        raise WireError("op id is not a short string")
    msg.op = op
    if "region" in header:
        msg.region = _region(header["region"])
    body = header.get("body", {})
    if not isinstance(body, dict):
        raise WireError("body is not a mapping")
    msg.body = body
    msg.tensor = _tensor(header, payload)
    return msg


def _region(value: Any) -> Region:
    ok = (isinstance(value, list) and len(value) == 2
          and all(isinstance(p, list) and len(p) == 2 for p in value)
          and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= MAX_DIM
                  for p in value for x in p))
    if not ok or value[0][0] > value[0][1] or value[1][0] > value[1][1]:
        raise WireError(f"bad region {value!r}")
    return Region(Range(*value[0]), Range(*value[1]))


def _tensor(header: dict[str, Any], payload: bytes | memoryview) -> torch.Tensor | None:
    if "dtype" not in header and "shape" not in header:
        if len(payload):
            raise WireError(f"{len(payload)} payload bytes but no dtype and shape")
        return None
    dtype, shape = header.get("dtype"), header.get("shape")
    if dtype not in DTYPES:
        raise WireError(f"dtype {dtype!r} is not allowed; allowed: {', '.join(DTYPES)}")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= MAX_DIMS
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_DIM
                       for d in shape)):
        raise WireError(f"bad shape {shape!r}")
    np_dtype, _ = DTYPES[dtype]
    need = int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize
    if need != len(payload):
        raise WireError(f"payload has {len(payload)} bytes, but {dtype} x {shape} needs {need}")
    array = np.frombuffer(payload, dtype=np_dtype)
    if not array.flags.aligned or not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array).reshape(shape)


def configure(sock: zmq.Socket) -> None:
    """The options of every runtime socket, host's and workers': close at once, never drop or
    hold back a message for a full queue, and refuse one larger than the wire allows."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, max(MAX_PAYLOAD_BYTES, MAX_HEADER_BYTES) + 4096)
