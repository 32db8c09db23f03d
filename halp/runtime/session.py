"""A worker's session with the host it serves now: the HELLO that opens it, and its keys.

A host proves the shared token in a nonce handshake (`halp.runtime.auth`); its HELLO then names
the device this worker plays, the run, the peers' addresses and a second, control connection.
Everything after is signed with the session key (from the host) or a peer key (from a peer),
and each sender's sequence numbers only go up (`auth.ReplayGuard`). No sockets here: the
worker's I/O thread owns the session and sends what `Session.seal` signs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import halp.runtime.auth as auth
from halp.model.zoo import ModelSpec
from halp.runtime.device import spec_from_dict
from halp.runtime.wire import KeyKind, Message, WireError, encode


@dataclass
class Session:
    """The host this worker serves now, over two connections: `identity` (handshake, plans,
    blocks) and `control` (pings only, so they never queue behind a block)."""

    identity: bytes
    control: bytes
    key: bytes
    run: str  # the run nonce
    device: str  # the name this worker plays in the scenario
    host: str
    peers: dict[str, str]
    guards: dict[bytes, auth.ReplayGuard] = field(default_factory=dict)  # per host connection
    seqs: dict[bytes, int] = field(default_factory=dict)  # per host connection
    peer_guards: dict[str, auth.ReplayGuard] = field(default_factory=dict)  # per peer, on arrival

    def __post_init__(self) -> None:
        for identity in (self.identity, self.control):
            self.guards[identity] = auth.ReplayGuard()
            self.seqs[identity] = 0

    def seal(self, msg: Message, via: bytes | None = None) -> tuple[bytes, list[Any]]:
        """The connection (`via`, else the main one) and frames that carry `msg` to the host,
        signed with the session key and the connection's next sequence number."""
        identity = via or self.identity
        msg.sender, msg.kind, msg.seq = self.device, KeyKind.SESSION, self.seqs[identity]
        self.seqs[identity] += 1
        return identity, encode(msg, self.key)


@dataclass(frozen=True)
class Hello:
    """A host's HELLO, checked."""

    nonce: str  # the one this worker gave that connection
    run: str
    device: str
    host: str
    peers: dict[str, str]
    threads: int
    control: str  # the control connection's identity, in hex
    spec: ModelSpec

    def session(self, identity: bytes, token: bytes) -> Session:
        """The session this hello opens on connection `identity`."""
        try:
            control = bytes.fromhex(self.control)
        except ValueError:
            raise WireError("hello names a malformed control connection") from None
        if not control or control == identity:
            raise WireError("hello names no control connection, or its own")
        return Session(identity, control, auth.session_key(token, self.nonce, self.run),
                       self.run, self.device, self.host, dict(self.peers))


def read_hello(body: dict[str, Any], expected: str | None, name: str | None) -> Hello:
    """A HELLO's body, checked: it must answer the nonce this worker gave (`expected`), and
    name this worker's device if it was started as `name`."""
    nonce = auth.check_nonce(body.get("nonce"))
    if expected is None or nonce != expected:
        raise WireError("stale or unknown nonce (a replayed hello?)")
    run = auth.check_nonce(body.get("run"))
    device, host = body.get("device"), body.get("host")
    peers = body.get("peers", {})
    threads = body.get("threads", 1)
    control = body.get("control")
    if not (isinstance(device, str) and isinstance(control, str) and len(control) <= 510
            and isinstance(host, str) and isinstance(peers, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in peers.items())
            and isinstance(threads, int) and 1 <= threads <= 64):
        raise WireError("hello lacks device, host, peers or threads")
    if name and device != name:
        raise WireError(f"this worker was started as {name!r}, but the host calls it "
                        f"{device!r}; check the endpoints file")
    spec = spec_from_dict(body.get("spec"))
    return Hello(nonce, run, device, host, peers, threads, control, spec)
