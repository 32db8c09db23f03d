"""A worker's links to its peers: a DEALER socket to each device its plans send blocks to.

Installing a plan connects the links it needs (`PeerLinks.connect_for`); they last until the
run ends (`close`). Each block is signed with the key of the pair of devices and the link's
next sequence number, which the peer's replay guard checks. Blocks from peers arrive on the
worker's own ROUTER socket, not here. The worker's I/O thread alone uses these sockets.
"""

from __future__ import annotations

from dataclasses import dataclass

import zmq

import halp.runtime.auth as auth
from halp.plan import Plan
from halp.runtime.device import sends_of
from halp.runtime.session import Session
from halp.runtime.wire import KeyKind, Message, WireError, configure, encode


@dataclass
class PeerOut:
    socket: zmq.Socket
    key: bytes
    seq: int = 0


class PeerLinks:
    """This device's links to its peers in the current run, by peer name."""

    def __init__(self, ctx: zmq.Context):
        self.ctx = ctx
        self.links: dict[str, PeerOut] = {}

    def connect_for(self, plan: Plan, session: Session, token: bytes) -> None:
        """A link to each peer this device sends to in `plan` that has none yet."""
        for op in sends_of(plan, session.device):
            if op.dst == session.host or op.dst in self.links:
                continue
            address = session.peers.get(op.dst)
            if address is None:
                raise WireError(f"plan sends to {op.dst}, whose address the host did not give")
            sock = self.ctx.socket(zmq.DEALER)
            configure(sock)
            try:
                sock.connect(address)
            except zmq.ZMQError as exc:
                sock.close(0)
                raise WireError(f"cannot connect to {op.dst} at {address}: {exc}") from None
            self.links[op.dst] = PeerOut(
                sock, auth.peer_key(token, session.run, session.device, op.dst))

    def send(self, peer: str, msg: Message) -> None:
        link = self.links[peer]
        msg.kind, msg.seq = KeyKind.PEER, link.seq
        link.seq += 1
        link.socket.send_multipart(encode(msg, link.key), copy=False)

    def close(self) -> None:
        for link in self.links.values():
            link.socket.close(0)
        self.links.clear()
