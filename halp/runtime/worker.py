"""The worker: one long-lived process per secondary device, serving run after run.

It listens on a ROUTER socket. A host proves the shared token in a nonce handshake and sends a
HELLO naming the device this worker plays and the model spec (`halp.runtime.session`); the
worker builds the model (the same seed gives the same weights) and answers with
`model_digest`, so the host can check that both hold identical numbers. The host then installs
plans (PLAN, `halp.runtime.installed`; the worker then keeps only the weights of the stages
they compute on its device) and, per request, says which plan runs (START) and sends
blocks (DATA). When a request is done here (ops computed, blocks sent, every block for it
received: `halp.runtime.request_state`) the worker sends a REPORT with the times on its own
`perf_counter` clock and its resident memory (`halp.runtime.resident`). Requests may overlap: a START or block of the next request queues its
work behind the current one's.

`Worker` owns the sockets and dispatches each message. Threads, as on the host, and what each
may touch:

- the I/O thread (the caller of `serve`): every socket (the ROUTER, the links to peers in
  `halp.runtime.peers`), the session, the pending nonces and the request table. It answers
  pings at once, stamps arrivals, and sends what the other threads hand it (the mailbox);
- the compute thread (`halp.runtime.compute`): builds models (the model cache is its alone)
  and runs this device's Compute and Gather ops in plan order, request after request. It
  writes the plan table, which the I/O thread reads and clears when a run ends;
- a sender thread per peer (`halp.runtime.compute` too): prepares this device's Transfers to
  it in plan order as soon as their inputs exist, reading the plan table.

All of them share the `BlockStore` (it has its own lock); its generation, bumped whenever a run
ends or is reset, marks the jobs and outcomes of a run that is over.

Anything that fails to decode, to verify or to fit the plan is logged and dropped; the worker
keeps serving. A new host HELLO, RESET or BYE drops the requests in flight; the models stay
built for the next run.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import zmq

import halp.runtime.auth as auth
from halp import __version__
from halp.errors import HalpError
from halp.latency.timing import steady_allocator
from halp.plan import Plan
from halp.runtime.clock import clock_identity
from halp.runtime.compute import (
    BlockReady,
    BuildModel,
    Computed,
    ComputeThreads,
    Failed,
    InstallPlan,
    ModelBuilt,
    Outcome,
    PeerDone,
    PlanChecked,
    RunRequest,
)
from halp.runtime.device import (
    BlockStore,
    Mailbox,
    check_block,
    destinations,
    io_priority,
    spec_from_dict,
)
from halp.runtime.installed import Installed, ModelCache
from halp.runtime.peers import PeerLinks
from halp.runtime.request_state import RequestState, RequestTable
from halp.runtime.resident import resident
from halp.runtime.session import Session, read_hello
from halp.runtime.wire import (
    AuthError,
    KeyKind,
    Message,
    MsgType,
    WireError,
    configure,
    decode,
    encode,
)

MAX_PENDING_NONCES = 64
POLL_MS = 100


def listen_address(text: str) -> str:
    """`tcp://HOST:PORT` from `HOST:PORT`, `:PORT` or a full ZeroMQ address; port 0 = any."""
    if "://" not in text:
        text = "tcp://" + (text if not text.startswith(":") else "*" + text)
    if text.startswith("tcp://") and text.endswith(":0"):
        text = text[:-2] + ":*"
    return text


class Worker:
    """A device's worker. `serve()` runs until `stop` is set; `close()` frees everything.
    Everything here but `compute` and the shared `store` and `plans` is the I/O thread's."""

    def __init__(self, listen: str, token: bytes, name: str | None = None, threads: int = 1,
                 log: logging.Logger | None = None, files: str | Path | None = None):
        self.token, self.name = token, name
        self.files = Path(files) if files is not None else None  # model file store (`files`)
        self.log = log or logging.getLogger("halp.worker")
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        configure(self.router)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        address = listen_address(listen)
        try:
            self.router.bind(address)
        except zmq.ZMQError as exc:
            self.router.close(0)
            self.ctx.term()
            raise HalpError(f"worker cannot listen on {address}: {exc}") from None
        self.address = str(self.router.getsockopt_string(zmq.LAST_ENDPOINT))
        torch.set_num_threads(threads)
        steady_allocator()  # run ops with the memory behaviour they were profiled with
        self.mailbox = Mailbox()
        self.store = BlockStore()
        self.plans: dict[int, Installed] = {}
        self.session: Session | None = None
        self.pending: OrderedDict[bytes, str] = OrderedDict()
        self.peer_links = PeerLinks(self.ctx)
        self.requests = RequestTable()
        self.clock = clock_identity()
        self.compute = ComputeThreads(self.store, self.mailbox, self.plans,
                                      ModelCache(self.files))
        self._closed = False

    @property
    def label(self) -> str:
        return self.name or (self.session.device if self.session else "worker")

    # ---- the I/O loop ---------------------------------------------------------------------
    def serve(self, stop: threading.Event) -> None:
        with io_priority():
            self._serve(stop)

    def _serve(self, stop: threading.Event) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.mailbox.fileno(), zmq.POLLIN)
        while not stop.is_set():
            events = dict(poller.poll(POLL_MS))
            if self.router in events:
                for _ in range(64):
                    try:
                        frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._on_frames(frames, time.perf_counter())
            if self.mailbox.fileno() in events:
                for outcome in self.mailbox.drain():
                    try:
                        self._on_outcome(outcome)
                    except Exception:  # a bug must not stop the worker
                        self.log.exception("%s: internal error handling %s", self.label,
                                           type(outcome).__name__)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.store.fail("the worker is stopping")
        self.compute.stop()
        self.peer_links.close()
        self.router.close(0)
        self.ctx.term()
        self.mailbox.close()

    # ---- messages in and out --------------------------------------------------------------
    def _reject(self, identity: bytes, why: str, reply: bool = False) -> None:
        self.log.warning("%s: rejected a message from connection %s: %s", self.label,
                         identity.hex(), why)
        if reply:
            frames = encode(Message(MsgType.REJECT, sender=self.name or "", kind=KeyKind.NONE,
                                    body={"reason": why[:200]}), None)
            self._route(identity, frames)

    def _route(self, identity: bytes, frames: list[Any]) -> bool:
        try:
            self.router.send_multipart([identity, *frames], copy=False)
            return True
        except zmq.ZMQError as exc:
            self.log.warning("%s: cannot send to connection %s (%s)", self.label, identity.hex(),
                             exc)
            return False

    def _on_frames(self, frames: list[Any], now: float) -> None:
        """Decode, authenticate and replay-check one message, then act on it."""
        if len(frames) < 2:
            return
        identity = frames[0].bytes
        session = self.session if self.session and identity in self.session.guards else None

        def key_for(kind: KeyKind, sender: str) -> bytes | None:
            if kind == KeyKind.TOKEN:
                return self.token
            if kind == KeyKind.SESSION and session is not None:
                return session.key
            if kind == KeyKind.PEER and self.session and sender in self.session.peers:
                return auth.peer_key(self.token, self.session.run, sender, self.session.device)
            return None

        try:
            msg = decode(frames[1:], key_for)
        except WireError as exc:
            # Only a well-formed handshake signed with another token hears why (so that a host
            # with the wrong token fails at once); garbage gets no answer.
            handshake = isinstance(exc, AuthError) and _looks_like_handshake(frames[1])
            self._reject(identity, str(exc), reply=handshake)
            return
        try:
            if msg.kind == KeyKind.SESSION:
                assert session is not None
                session.guards[identity].check(msg.seq)
            elif msg.kind == KeyKind.PEER:
                assert self.session is not None  # only a session knows peer keys
                self.session.peer_guards.setdefault(msg.sender, auth.ReplayGuard()).check(msg.seq)
        except WireError as exc:
            self._reject(identity, f"{msg.type.name}: {exc}")
            return
        try:
            self._dispatch(identity, msg, now)
        except (WireError, HalpError) as exc:
            handshake = msg.type in (MsgType.NONCE_REQ, MsgType.HELLO)
            self._reject(identity, f"{msg.type.name}: {exc}", reply=handshake)
            if msg.type in (MsgType.DATA, MsgType.START) and msg.request is not None:
                # Authentic but unusable: tell the host now rather than let it time out.
                self._to_host(Message(MsgType.FAIL, request=msg.request,
                                      body={"error": f"{msg.type.name} {msg.op or ''}: {exc}"}))
        except Exception:
            self.log.exception("%s: internal error handling %s", self.label, msg.type.name)

    def _dispatch(self, identity: bytes, msg: Message, now: float) -> None:
        t = msg.type
        if t == MsgType.NONCE_REQ:
            challenge = auth.check_nonce(msg.body.get("challenge"))
            nonce = auth.new_nonce()
            self.pending[identity] = nonce
            while len(self.pending) > MAX_PENDING_NONCES:
                self.pending.popitem(last=False)
            self._route(identity, encode(Message(MsgType.NONCE, sender=self.name or "",
                                                 kind=KeyKind.TOKEN,
                                                 body={"challenge": challenge, "nonce": nonce}),
                                         self.token))
        elif t == MsgType.HELLO:
            self._hello(identity, msg)
        elif t == MsgType.PING:
            self._to_host(Message(MsgType.PONG, body={"t0": msg.body.get("t0"), "tw": now}),
                          via=identity)
        elif t == MsgType.PLAN:
            self._plan(msg)
        elif t == MsgType.START:
            self._request(_request_id(msg), _plan_id(msg.body))
        elif t == MsgType.DATA:
            self._data(msg)
        elif t == MsgType.RESET:
            self._reset()
        elif t == MsgType.BYE:
            self._to_host(Message(MsgType.BYE_OK))
            self.log.info("%s: run over (bye from %s)", self.label,
                          self.session and self.session.host)
            self._end_run()
        else:
            raise WireError(f"a worker does not take {t.name}")

    # ---- the session with the host --------------------------------------------------------
    def _hello(self, identity: bytes, msg: Message) -> None:
        hello = read_hello(msg.body, self.pending.pop(identity, None), self.name)
        if self.session is not None:
            self.log.info("%s: a new host session replaces the run from %s", self.label,
                          self.session.host)
            self._end_run()
        self.session = hello.session(identity, self.token)
        torch.set_num_threads(hello.threads)
        self.log.info("%s: host %s connected (run %s, %d thread(s)); building %s", self.label,
                      hello.host, hello.run[:8], hello.threads, hello.spec.variant)
        self.compute.put(BuildModel(self.store.generation, hello.spec))

    def _end_run(self) -> None:
        self.store.reset()
        self.requests.clear()
        self.plans.clear()
        self.peer_links.close()
        self.session = None

    def _reset(self) -> None:
        self.store.reset()
        self.requests.clear()

    def _to_host(self, msg: Message, via: bytes | None = None) -> bool:
        session = self.session
        if session is None:
            return False
        if not self._route(*session.seal(msg, via)):
            self.log.warning("%s: host %s is gone; dropping its run", self.label, session.host)
            self._end_run()
            return False
        return True

    # ---- plans and requests ---------------------------------------------------------------
    def _plan(self, msg: Message) -> None:
        session = self.session
        assert session is not None
        plan_id = _plan_id(msg.body)
        try:
            plan = Plan.from_dict(msg.body["plan"])
            spec = spec_from_dict(msg.body.get("spec"))
            self.peer_links.connect_for(plan, session, self.token)
        except (KeyError, TypeError, ValueError, HalpError) as exc:
            self.log.warning("%s: cannot install plan %s: %s", self.label, plan_id, exc)
            self._to_host(Message(MsgType.PLAN_OK, body={"plan_id": plan_id, "digest": None,
                                                         "error": f"bad plan: {exc}"}))
            return
        self.compute.put(InstallPlan(self.store.generation, spec, plan_id, plan, session.device))

    def _request(self, request: int, plan_id: int) -> RequestState:
        """The state of `request`; on its first message, a new one whose work is queued."""
        state = self.requests.get(request)
        if state is not None:
            return state
        self.requests.check_new(request)
        session, installed = self.session, self.plans.get(plan_id)
        if session is None or installed is None:
            raise WireError(f"request {request} names plan {plan_id}, which is not installed")
        state = self.requests.add(request, RequestState.of(plan_id, installed.plan,
                                                           session.device))
        self.compute.run(RunRequest(self.store.generation, request, plan_id, session.device),
                         state.compute_left, destinations(installed.plan, session.device))
        return state

    def _data(self, msg: Message) -> None:
        session = self.session
        assert session is not None
        request, plan_id = _request_id(msg), _plan_id(msg.body)
        installed = self.plans.get(plan_id)
        if installed is None:
            raise WireError(f"block for plan {plan_id}, which is not installed")
        op = check_block(installed.plan, installed.graph, msg.op or "", session.device,
                         msg.region, msg.tensor)
        if msg.kind == KeyKind.PEER and msg.sender != op.src:
            raise WireError(f"{msg.sender} sent block {op.id}, which comes from {op.src}")
        state = self._request(request, plan_id)
        assert msg.tensor is not None
        block = (op.region, msg.tensor)
        state.received(op.id, self.store.put(request, op.id, block), msg.tensor.nbytes)
        self._maybe_report(request)

    def _maybe_report(self, request: int) -> None:
        state = self.requests.take_done(request)
        if state is None:
            return
        self.store.drop(request)
        self._to_host(Message(MsgType.REPORT, request=request,
                              body={**state.report(), "resident": resident()}))

    # ---- what the other threads hand over -------------------------------------------------
    def _on_outcome(self, outcome: Outcome) -> None:
        if outcome.generation != self.store.generation or self.session is None:
            return  # from a run that is over
        match outcome:
            case ModelBuilt(digest=digest, error=error):
                self._to_host(Message(MsgType.WELCOME, body={
                    "digest": digest, "error": error, "name": self.name, "pid": os.getpid(),
                    "version": __version__, "clock": self.clock}))
            case PlanChecked(plan_id=plan_id, digest=digest, error=error):
                self._to_host(Message(MsgType.PLAN_OK, body={"plan_id": plan_id,
                                                             "digest": digest, "error": error}))
            case BlockReady():
                self._send_block(outcome)
            case Computed(request=request, records=records):
                if (state := self.requests.get(request)) is not None:
                    state.computed(records)
                    self._maybe_report(request)
            case PeerDone(request=request):
                if (state := self.requests.get(request)) is not None:
                    state.peer_done()
                    self._maybe_report(request)
            case Failed(request=request, error=error):
                self.log.warning("%s: request %s failed: %s", self.label, request, error)
                self.requests.fail(request)
                self.store.drop(request)
                self._to_host(Message(MsgType.FAIL, request=request, body={"error": error}))

    def _send_block(self, ready: BlockReady) -> None:
        session = self.session
        assert session is not None
        request, op, (region, tensor) = ready.request, ready.op, ready.block
        state = self.requests.get(request)
        msg = Message(MsgType.DATA, request=request, op=op.id, region=region, tensor=tensor,
                      body={"plan_id": ready.plan_id}, sender=session.device)
        at = time.perf_counter()
        if op.dst == session.host:
            self._to_host(msg)
        else:
            self.peer_links.send(op.dst, msg)
        if state is not None:
            state.sent[op.id] = at
        self.store.mark_sent(request, op.id)


def _looks_like_handshake(head: Any) -> bool:
    data = bytes(memoryview(head).cast("B")[:6])
    return data[:4] == b"HALP" and data[5:6] in (bytes([MsgType.NONCE_REQ]), bytes([MsgType.HELLO]))


def _request_id(msg: Message) -> int:
    if msg.request is None:
        raise WireError(f"{msg.type.name} without a request id")
    return msg.request


def _plan_id(body: dict[str, Any]) -> int:
    plan_id = body.get("plan_id")
    if not isinstance(plan_id, int) or isinstance(plan_id, bool):
        raise WireError("message lacks its plan id")
    return plan_id


def serve_forever(listen: str, token: bytes, name: str | None = None, threads: int = 1,
                  stop: threading.Event | None = None, ready: Any = None,
                  log: logging.Logger | None = None, files: str | Path | None = None) -> None:
    """Start a worker, call `ready(address)`, serve until `stop` is set, then close it."""
    worker = Worker(listen, token, name, threads, log, files)
    try:
        if ready is not None:
            ready(worker.address)
        worker.serve(stop or threading.Event())
    finally:
        worker.close()


__all__ = ["Worker", "serve_forever", "listen_address"]
