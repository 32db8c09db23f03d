"""The host's I/O thread: one DEALER socket per worker, owned by one thread.

The hub does the handshake with every worker, answers nothing but listens to everything: it
stamps and checks arriving blocks into the host's `BlockStore`, keeps the workers' REPORTs (and
each worker's latest resident memory, checked: a bad figure fails the run), probes every
worker's clock with a PING each `heartbeat_s` (which doubles as the heartbeat), and sends what
the host's threads hand it, in order, stamping when each block went out.

It declares a worker dead, with a message naming it, when its connection drops (a socket
monitor sees the disconnect at once) or when it has sent nothing for `dead_after_s`; the failure
wakes every thread waiting on the host. Other threads talk to it only through `send` and the
`wait_for` condition.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

import halp.runtime.auth as auth
from halp.errors import BackendError, HalpError
from halp.model.graph import ModelGraph
from halp.plan import Plan
from halp.runtime.clock import ClockSync, clock_identity, same_clock
from halp.runtime.device import Block, BlockStore, Mailbox, check_block, io_priority
from halp.runtime.resident import checked_resident
from halp.runtime.wire import KeyKind, Message, MsgType, WireError, configure, decode, encode


def endpoint_address(text: str) -> str:
    """`tcp://HOST:PORT` from `HOST:PORT` or a full ZeroMQ address."""
    return text if "://" in text else f"tcp://{text}"


@dataclass
class Link:
    """The host's connections to one worker: `socket` carries the handshake, plans and blocks;
    `control` carries only pings and pongs, so the heartbeat and the clock probes never queue
    behind a large block."""

    name: str
    address: str
    socket: zmq.Socket
    control: zmq.Socket
    control_id: bytes
    monitors: list[zmq.Socket]
    challenge: str = field(default_factory=auth.new_nonce)
    key: bytes | None = None
    seq: dict[str, int] = field(default_factory=lambda: {"data": 0, "control": 0})
    guards: dict[str, auth.ReplayGuard] = field(
        default_factory=lambda: {"data": auth.ReplayGuard(), "control": auth.ReplayGuard()})
    clock: ClockSync = field(default_factory=ClockSync)
    state: str = "new"  # new -> hello -> ready
    welcome: dict[str, Any] = field(default_factory=dict)
    plan_ok: dict[int, dict[str, Any]] = field(default_factory=dict)
    last_heard: float = 0.0
    last_ping: float = 0.0
    bye: bool = False
    dead: bool = False
    resident: dict[str, int] | None = None  # its latest reading (`halp.runtime.resident`)

    def sockets(self) -> list[zmq.Socket]:
        return [self.socket, self.control]


class Hub:
    def __init__(self, endpoints: dict[str, str], token: bytes, host: str,
                 hello: dict[str, dict[str, Any]], store: BlockStore, heartbeat_s: float = 0.5,
                 dead_after_s: float = 5.0, log: logging.Logger | None = None):
        self.token, self.host, self.hello, self.store = token, host, hello, store
        self.heartbeat_s, self.dead_after_s = heartbeat_s, dead_after_s
        self.log = log or logging.getLogger("halp.host")
        self.run = auth.new_nonce()
        self.cond = threading.Condition()
        self.failure: str | None = None
        self.request: int | None = None  # the request in flight, for messages
        self.plans: dict[int, tuple[Plan, ModelGraph]] = {}
        self.reports: dict[tuple[int, str], dict[str, Any]] = {}
        self.sent: dict[tuple[int, str], float] = {}
        # (request, transfer) -> when its block was held here, and the bytes that arrived
        self.arrived: dict[tuple[int, str], tuple[float, int]] = {}
        self.clock = clock_identity()
        self.ctx = zmq.Context()
        self.mailbox = Mailbox()
        self.links: dict[str, Link] = {}
        opened: list[zmq.Socket] = []
        try:
            for name, address in endpoints.items():
                sockets, monitors = [], []
                for _ in range(2):
                    sock = self.ctx.socket(zmq.DEALER)
                    opened.append(sock)
                    configure(sock)
                    sock.setsockopt(zmq.ROUTING_ID, secrets.token_bytes(16))
                    monitors.append(sock.get_monitor_socket(zmq.EVENT_DISCONNECTED))
                    opened.append(monitors[-1])
                    try:
                        sock.connect(address)
                    except zmq.ZMQError as exc:
                        raise BackendError(f"device {name}: cannot use address {address!r} "
                                           f"({exc}); write tcp://HOST:PORT") from None
                    sockets.append(sock)
                control_id = sockets[1].getsockopt(zmq.ROUTING_ID)
                assert isinstance(control_id, bytes)
                self.links[name] = Link(name, address, sockets[0], sockets[1], control_id, monitors)
        except BaseException:
            for sock in opened:
                sock.close(0)
            self.ctx.term()
            self.mailbox.close()
            raise
        self._thread = threading.Thread(target=self._loop, name="halp-hub")

    # ---- the main thread's side -----------------------------------------------------------
    def start(self) -> None:
        for link in self.links.values():
            self._send(link, Message(MsgType.NONCE_REQ, kind=KeyKind.TOKEN,
                                     body={"challenge": link.challenge}))
            link.state = "hello"
        self._thread.start()

    def send(self, device: str, msg: Message) -> None:
        """Queue `msg` for `device` (thread-safe); DATA is stamped when it leaves."""
        self.mailbox.put(("send", device, msg))

    def probe(self, device: str) -> None:
        """Send one clock probe (PING) to `device` now; the PONG adds a clock sample."""
        self.mailbox.put(("ping", device))

    def wait_for(self, ready: Callable[[], bool], timeout_s: float,
                 on_timeout: Callable[[], str]) -> None:
        """Wait until `ready()` (checked under the hub's lock); raise on failure or timeout."""
        deadline = time.perf_counter() + timeout_s
        with self.cond:
            while not ready():
                if self.failure is not None:
                    raise BackendError(self.failure)
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise BackendError(on_timeout())
                self.cond.wait(min(left, 0.2))
            if self.failure is not None:
                raise BackendError(self.failure)

    def check(self) -> None:
        if self.failure is not None:
            raise BackendError(self.failure)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def fail(self, message: str, link: Link | None = None) -> None:
        with self.cond:
            if link is not None:
                link.dead = True
            if self.failure is None:
                self.failure = message
                self.log.error("%s", message)
            self.cond.notify_all()
        self.store.fail(message)

    def stop(self) -> None:
        """Stop the thread, close every socket (linger 0) and the context."""
        if self._thread.is_alive():
            self.mailbox.put(("stop",))
            self._thread.join()
        else:
            self._close_sockets()
        self.ctx.term()
        self.mailbox.close()

    def drop(self, request: int) -> None:
        with self.cond:
            for table in (self.reports, self.sent, self.arrived):
                for key in [k for k in table if k[0] == request]:
                    del table[key]

    def _during(self) -> str:
        return f" during request {self.request}" if self.request is not None else ""

    # ---- the hub thread -------------------------------------------------------------------
    def _loop(self) -> None:
        with io_priority():
            self._serve()

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.mailbox.fileno(), zmq.POLLIN)
        by_socket: dict[Any, Link] = {}
        for link in self.links.values():
            for sock in [*link.sockets(), *link.monitors]:
                poller.register(sock, zmq.POLLIN)
                by_socket[sock] = link
        try:
            while True:
                events = dict(poller.poll(max(1, int(self.heartbeat_s * 250))))
                for sock in events:
                    if sock == self.mailbox.fileno():
                        continue
                    link = by_socket[sock]
                    if sock in link.monitors:
                        self._on_monitor(link, sock)
                    else:
                        self._drain(link, "data" if sock is link.socket else "control")
                if self.mailbox.fileno() in events:
                    for item in self.mailbox.drain():
                        if item[0] == "stop":
                            return
                        if item[0] == "ping":
                            if self.links[item[1]].state == "ready":
                                self._ping(self.links[item[1]])
                        else:
                            self._on_send(item[1], item[2])
                self._heartbeat()
        except Exception as exc:  # a bug here must not leave the host waiting forever
            self.log.exception("host I/O thread failed")
            self.fail(f"the host's I/O thread failed: {exc}")
        finally:
            self._close_sockets()

    def _close_sockets(self) -> None:
        for link in self.links.values():
            for sock in link.sockets():
                if not sock.closed:
                    sock.disable_monitor()
                    sock.close(0)
            for monitor in link.monitors:
                monitor.close(0)

    def _send(self, link: Link, msg: Message, channel: str = "data") -> None:
        msg.sender = self.host
        if msg.kind == KeyKind.TOKEN:
            key = self.token
        else:
            if link.key is None:
                raise BackendError(f"device {link.name}: no session yet")
            key, msg.seq = link.key, link.seq[channel]
            link.seq[channel] += 1
        sock = link.socket if channel == "data" else link.control
        sock.send_multipart(encode(msg, key), copy=False)

    def _on_send(self, device: str, msg: Message) -> None:
        link = self.links[device]
        data = _block_of(msg)
        if link.state == "ready":
            if data is not None:
                at = time.perf_counter()
                with self.cond:
                    self.sent[data] = at
            self._send(link, msg)
        if data is not None:  # sent, or dropped with its link: nobody waits for it any more
            self.store.mark_sent(*data)

    def _on_monitor(self, link: Link, monitor: zmq.Socket) -> None:
        while True:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_DISCONNECTED and link.key is not None and not link.bye:
                self.fail(f"device {link.name} ({link.address}) closed the connection"
                          f"{self._during()}: did its worker die?", link)

    def _heartbeat(self) -> None:
        now = time.perf_counter()
        for link in self.links.values():
            if link.state != "ready" or link.bye:
                continue
            if link.dead:
                continue
            if now - link.last_heard > self.dead_after_s:
                self.fail(f"device {link.name} ({link.address}) sent nothing for "
                          f"{now - link.last_heard:.1f} s{self._during()}: its worker died or "
                          "the network is down", link)
                continue
            if now - link.last_ping >= self.heartbeat_s:
                self._ping(link)

    def _ping(self, link: Link) -> None:
        link.last_ping = now = time.perf_counter()
        self._send(link, Message(MsgType.PING, body={"t0": now}), "control")

    def _drain(self, link: Link, channel: str) -> None:
        sock = link.socket if channel == "data" else link.control
        for _ in range(64):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            now = time.perf_counter()

            def key_for(kind: KeyKind, sender: str, link: Link = link) -> bytes | None:
                if kind == KeyKind.TOKEN and link.state == "hello" and link.key is None:
                    return self.token
                if kind == KeyKind.SESSION:
                    return link.key
                return None

            try:
                msg = decode(frames, key_for)
                if msg.kind == KeyKind.SESSION:
                    link.guards[channel].check(msg.seq)
                link.last_heard = now
                self._on_message(link, msg, now)
            except (WireError, HalpError) as exc:
                self.log.warning("message from device %s dropped: %s", link.name, exc)

    def _on_message(self, link: Link, msg: Message, now: float) -> None:
        t = msg.type
        if t == MsgType.REJECT:
            if link.state != "ready":
                self.fail(f"device {link.name} at {link.address} rejected the handshake: "
                          f"{msg.body.get('reason', '?')}")
            return
        if t == MsgType.NONCE:
            if msg.body.get("challenge") != link.challenge or link.key is not None:
                raise WireError("nonce does not answer our challenge")
            nonce = auth.check_nonce(msg.body.get("nonce"))
            link.key = auth.session_key(self.token, nonce, self.run)
            self._send(link, Message(MsgType.HELLO, kind=KeyKind.TOKEN, body={
                **self.hello[link.name], "nonce": nonce, "run": self.run, "device": link.name,
                "host": self.host, "control": link.control_id.hex()}))
            return
        if t == MsgType.WELCOME:
            if msg.body.get("error"):
                self.fail(f"device {link.name} cannot build the model: {msg.body['error']}")
                return
            with self.cond:
                link.welcome = msg.body
                link.state = "ready"
                link.clock.shared = same_clock(self.clock, msg.body.get("clock") or {})
                self.cond.notify_all()
            return
        if link.state != "ready":
            raise WireError(f"{t.name} before the handshake finished")
        if t == MsgType.PONG:
            t0, tw = msg.body.get("t0"), msg.body.get("tw")
            if isinstance(t0, float) and isinstance(tw, float) and t0 <= now:
                with self.cond:
                    link.clock.add(t0, tw, now)
                    self.cond.notify_all()
        elif t == MsgType.PLAN_OK:
            with self.cond:
                link.plan_ok[int(msg.body.get("plan_id", -1))] = msg.body
                self.cond.notify_all()
        elif t == MsgType.DATA:
            self._on_data(link, msg)
        elif t == MsgType.REPORT:
            assert msg.request is not None
            try:
                resident = checked_resident(msg.body.get("resident"))
            except WireError as exc:  # signed with the session's key: a broken worker, not noise
                self.fail(f"device {link.name} sent a bad report of request {msg.request}: {exc}")
                return
            with self.cond:
                self.reports[(msg.request, link.name)] = msg.body
                link.resident = resident or link.resident
                self.cond.notify_all()
        elif t == MsgType.FAIL:
            self.fail(f"device {link.name} failed request {msg.request}: "
                      f"{msg.body.get('error', '?')}")
        elif t == MsgType.BYE_OK:
            with self.cond:
                link.bye = True
                self.cond.notify_all()
        else:
            raise WireError(f"the host does not take {t.name}")

    def _on_data(self, link: Link, msg: Message) -> None:
        plan_id = msg.body.get("plan_id")
        if msg.request is None or plan_id not in self.plans:
            raise WireError(f"block for unknown plan {plan_id}")
        plan, graph = self.plans[plan_id]
        op = check_block(plan, graph, msg.op or "", self.host, msg.region, msg.tensor)
        if op.src != link.name:
            raise WireError(f"block {op.id} should come from {op.src}, not {link.name}")
        assert msg.tensor is not None
        block: Block = (op.region, msg.tensor)
        at = self.store.put(msg.request, op.id, block)
        with self.cond:
            self.arrived[(msg.request, op.id)] = (at, msg.tensor.nbytes)
            self.cond.notify_all()


def _block_of(msg: Message) -> tuple[int, str] | None:
    """(request, op) of the block a DATA message carries; None for any other message."""
    if msg.type == MsgType.DATA and msg.request is not None and msg.op is not None:
        return msg.request, msg.op
    return None
