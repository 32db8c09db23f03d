"""The host executor: serve a scenario's workload with real workers, and trace every op.

`run_host` connects to the workers (`halp worker`), checks that they built identical weights,
installs every plan the policy may answer, and then serves the requests as they arrive
(`halp.workload.arrival_times`). A request enters when it arrives, whether or not the earlier
ones are done, as in the simulator: every device serves its ops in plan order, request after
request. The admission thread puts each input in place at its arrival and tells the workers;
the host runs its own Compute and Gather ops on the calling thread, request after request,
while a sender thread per peer sends the host's Transfers to it in plan order as soon as each
one's input block exists, and the hub thread receives blocks from the workers: communication and
computation overlap as the plan says, within a request and across requests.

What it records, with the same op ids and columns as the simulator (`halp.trace`):

- an OpRecord per op: host ops on the host clock; worker ops on the worker's clock, mapped to
  the host's with the clock offset (`uncertainty_s` says how well); a transfer from the moment
  its sender handed it to the socket to the moment the receiver held it, checked;
- a RequestRecord per request, from the moment its input exists on the host (its arrival time)
  to the moment the host holds the whole output. Then, outside the timed part, the output is
  compared with the monolithic model on the host: `max_abs_error`, and a relative error above
  `TOLERANCE` fails the run at the end (after every record is on disk);
- in the run's meta (`runtime.json`), beside the clocks and digests: each device's resident
  memory after the last request, `resident_bytes: {device: {"rss": B, "peak": B}}` (the host's
  own, the workers' from their reports; `halp.runtime.resident`).

A worker that dies, disconnects or stays silent for `dead_after_s` stops the run with a
`BackendError` naming the device; the requests that finished are already written.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from halp.errors import BackendError
from halp.latency.timing import steady_allocator
from halp.model.graph import ModelGraph
from halp.model.zoo import model_digest
from halp.plan import Compute, Gather, Input, Plan, Transfer
from halp.policy import Observation, Policy, Served
from halp.runtime.device import (
    Aborted,
    Block,
    BlockStore,
    SendQueues,
    destinations,
    involved,
    io_priority,
    run_compute_ops,
    send_ops,
    spec_to_dict,
)
from halp.runtime.hub import Hub, Link, endpoint_address
from halp.runtime.resident import resident
from halp.runtime.wire import Message, MsgType
from halp.scenario import Scenario
from halp.trace import OpRecord, RequestRecord, Trace, TraceWriter, resource_of
from halp.workload import arrival_times

TOLERANCE = 1e-4  # relative to the largest output magnitude, as `halp verify`
CONNECT_TIMEOUT_S = 15.0


@dataclass
class _Installed:
    plan_id: int
    served: Served
    workers: list[str]
    digest: str


@dataclass
class _Outcome:
    finish: float
    host_ops: list[tuple[str, float, float]]
    reports: dict[str, dict[str, Any]]
    sent: dict[str, float]
    arrived: dict[str, tuple[float, int]]  # transfer -> when it was held, bytes that arrived
    output: torch.Tensor


@dataclass
class _Admitted:
    """A request that has entered: its input is in place and its workers know of it."""
    request: int
    at: float  # arrival, s from the run start
    item: _Installed
    served: Served
    dispatched: float  # perf_counter
    costs: dict[str, float]


@dataclass
class _Check:
    failures: list[tuple[int, float, float]] = field(default_factory=list)
    references: dict[tuple[str, int], torch.Tensor] = field(default_factory=dict)


SETTLE_MAX_S = 1.0


def settle_s(arrivals: list[float]) -> float:
    """How long to leave everything idle between the warm-up and request 0: the gap before
    request 1, at most `SETTLE_MAX_S` (that long for a lone request). A request that follows a
    warm-up at once meets busy devices and links (a CPU quota already spent in this period, a
    shaper's burst used up, a TCP window still open) that the requests after it, and the
    simulator, do not see."""
    gap = arrivals[1] - arrivals[0] if len(arrivals) > 1 else SETTLE_MAX_S
    return min(SETTLE_MAX_S, max(0.0, gap))


class _Sender:
    """The host's Transfers, to each peer in plan order, request after request (`SendQueues`)."""

    def __init__(self, hub: Hub, store: BlockStore, host: str):
        self.hub, self.store, self.host = hub, store, host
        self.queues = SendQueues("halp-host-send", self._send_to)
        self.left: dict[int, int] = {}  # request -> peers whose sends are not done
        self.errors: dict[int, BaseException] = {}
        self.cond = threading.Condition()

    def submit(self, request: int, plan_id: int, plan: Plan, graph: ModelGraph) -> None:
        peers = destinations(plan, self.host)
        with self.cond:
            self.left[request] = len(peers)
        self.queues.put(peers, (request, plan_id, plan, graph))

    def _send_to(self, peer: str, job: tuple[int, int, Plan, ModelGraph]) -> None:
        request, plan_id, plan, graph = job

        def send(op: Transfer, block: Block) -> None:
            self.hub.send(op.dst, Message(MsgType.DATA, request=request, op=op.id,
                                          region=block[0], tensor=block[1],
                                          body={"plan_id": plan_id}))

        error: BaseException | None = None
        try:
            send_ops(plan, graph, self.host, request, self.store, send, to=peer)
        except BaseException as exc:  # handed to the main thread
            error = exc
        with self.cond:
            self.left[request] -= 1
            if error is not None:
                self.errors.setdefault(request, error)
            self.cond.notify_all()

    def wait(self, request: int, deadline: float) -> None:
        with self.cond:
            while self.left.get(request, 0) > 0:
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise BackendError(f"request {request}: the host's sends did not finish in time")
                self.cond.wait(min(left, 0.2))
            self.left.pop(request, None)
            error = self.errors.pop(request, None)
        if error is not None:
            raise error

    def stop(self) -> None:
        self.queues.stop()


def load_endpoints(data: Any, source: str = "endpoints") -> dict[str, str]:
    """`{"device": "tcp://HOST:PORT"}` (or `HOST:PORT`), checked."""
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in data.items()):
        raise BackendError(f"{source}: write a JSON object of device name to address, like "
                           '{"pi1": "tcp://10.0.0.2:5555"}')
    return {name: endpoint_address(address) for name, address in data.items()}


def run_host(scenario: Scenario, policy: Policy, writer: TraceWriter, endpoints: dict[str, str],
             token: bytes, timeout_s: float, *, warmup_requests: int = 0,
             heartbeat_s: float = 0.5, dead_after_s: float = 10.0, sync_rounds: int = 8,
             distinct_inputs: int = 4, log: logging.Logger | None = None,
             on_request: Callable[[RequestRecord], None] | None = None,
             on_start: Callable[[float], None] | None = None) -> Trace:
    """Serve `scenario`'s workload with `policy` on the workers at `endpoints` (device name ->
    ZeroMQ address of its `halp worker`), appending records to `writer`. Returns its Trace.

    `timeout_s` bounds connecting, installing and every request; a worker silent for
    `dead_after_s` is dead. `warmup_requests` untimed requests per plan run first (not
    recorded). Request r computes input `r % distinct_inputs` (fixed by the scenario's seed),
    so the monolithic reference is computed at most that many times per model. `on_request`
    is called with each RequestRecord once it is written (progress lines); `on_start` once,
    with the run's time zero on the `time.monotonic()` clock, when serving begins (bandwidth
    traces are played from then).
    """
    log = log or logging.getLogger("halp.host")
    host = scenario.host
    servings = policy.served()
    if not servings:
        raise BackendError("the policy serves no plan")
    devices = {d.name: d for d in scenario.devices}
    used = sorted({d for s in servings for d in s.plan.devices if d != host and involved(s.plan, d)})
    missing = [w for w in used if w not in endpoints]
    if missing:
        raise BackendError(f"no endpoint for device {missing[0]}: add \"{missing[0]}\": "
                           "\"tcp://ADDRESS:PORT\" to the endpoints")
    # Every secondary with an endpoint: a policy may use it later even if its first plans do not.
    workers = sorted(set(used) | {w for w in endpoints if w in devices and w != host})
    addresses = {w: endpoint_address(endpoints[w]) for w in workers}
    first = servings[0].prepared
    hello = {w: {"spec": spec_to_dict(first.spec), "threads": devices[w].threads,
                 "peers": addresses} for w in workers}
    store = BlockStore()
    hub = Hub(addresses, token, host, hello, store, heartbeat_s, dead_after_s, log)
    threads = torch.get_num_threads()
    torch.set_num_threads(devices[host].threads)
    steady_allocator()  # run ops with the memory behaviour they were profiled with
    sender: _Sender | None = None
    run: _Run | None = None
    try:
        log.info("connecting to %d worker(s): %s", len(workers),
                 ", ".join(f"{w} at {a}" for w, a in addresses.items()) or "none")
        hub.start()
        digests = _Digests()
        _connect(hub, timeout_s, digests(first.model))
        _sync_clocks(hub, sync_rounds, timeout_s)
        installed = _install(hub, servings, timeout_s, digests)
        sender = _Sender(hub, store, host)
        run = _Run(scenario, hub, store, sender, installed, timeout_s, distinct_inputs, log,
                   on_request, digests, on_start)
        writer.trace.meta.update(run.meta())
        for name, clock in run.meta()["clocks"].items():
            log.info("%s ready: clock offset %.6f s +- %.6f s%s", name, clock["offset_s"],
                     clock["uncertainty_s"], " (same clock)" if clock["same_clock"] else "")
        run.warm_up(warmup_requests)
        log.info("serving %d request(s) after %d warm-up round(s)",
                 scenario.workload.requests, warmup_requests)
        run.serve(policy, writer)
        writer.trace.meta.update(run.meta())
        run.verdict()
    finally:
        if run is not None:
            writer.trace.meta.update(run.meta())
        if sender is not None:
            store.fail("the run is over")
            sender.stop()
        _goodbye(hub)
        hub.stop()
        torch.set_num_threads(threads)
    return writer.trace


# ---- setting up ---------------------------------------------------------------------------
def _connect(hub: Hub, timeout_s: float, digest: str) -> None:
    def late() -> str:
        waiting = [link for link in hub.links.values() if link.state != "ready"]
        link = waiting[0]
        if link.key is None:
            return (f"device {link.name} at {link.address} did not answer within "
                    f"{min(timeout_s, CONNECT_TIMEOUT_S):g} s: is `halp worker` running there "
                    "and reachable?")
        return (f"device {link.name} at {link.address} did not finish the handshake within "
                f"{timeout_s:g} s (building the model?)")

    hub.wait_for(lambda: all(link.key is not None for link in hub.links.values()),
                 min(timeout_s, CONNECT_TIMEOUT_S), late)
    hub.wait_for(lambda: all(link.state == "ready" for link in hub.links.values()), timeout_s, late)
    for link in hub.links.values():
        _check_digest(link, link.welcome.get("digest"), digest)


class _Digests:
    """`model_digest` once per model during one run (hashing VGG-16 takes a while)."""

    def __init__(self) -> None:
        self.known: dict[int, tuple[torch.nn.Module, str]] = {}

    def __call__(self, model: torch.nn.Module) -> str:
        if id(model) not in self.known:
            self.known[id(model)] = (model, model_digest(model))
        return self.known[id(model)][1]


def _check_digest(link: Link, got: Any, want: str) -> None:
    if got != want:
        raise BackendError(f"device {link.name} built weights with digest {got}, the host has "
                           f"{want}: different weights file or torch version?")


def _sync_clocks(hub: Hub, rounds: int, timeout_s: float) -> None:
    """Ping each worker `rounds` times, one at a time, before the run starts."""
    for link in hub.links.values():
        for _ in range(rounds):
            count = link.clock.count
            hub.probe(link.name)

            def answered(link: Link = link, count: int = count) -> bool:
                return link.clock.count > count

            def silent(link: Link = link) -> str:
                return f"device {link.name} did not answer a clock probe within {timeout_s:g} s"

            hub.wait_for(answered, timeout_s, silent)


def _install(hub: Hub, servings: list[Served], timeout_s: float, digests: _Digests,
             first_id: int = 0, cancel: threading.Event | None = None) -> list[_Installed]:
    """Send plans to their workers and wait for each to confirm (or for `cancel`)."""
    installed = []
    for plan_id, served in enumerate(servings, start=first_id):
        plan = served.plan
        hub.plans[plan_id] = (plan, served.prepared.graph)
        workers = [w for w in plan.devices if w in hub.links and involved(plan, w)]
        for w in workers:
            hub.send(w, Message(MsgType.PLAN, body={"plan_id": plan_id, "plan": plan.to_dict(),
                                                    "spec": spec_to_dict(served.prepared.spec)}))
        installed.append(_Installed(plan_id, served, workers, digests(served.prepared.model)))
    for item in installed:
        for w in item.workers:
            link = hub.links[w]

            def installed_on(link: Link = link, item: _Installed = item) -> bool:
                return item.plan_id in link.plan_ok or (cancel is not None and cancel.is_set())

            def late(link: Link = link) -> str:
                return f"device {link.name} did not install its plan within {timeout_s:g} s"

            hub.wait_for(installed_on, timeout_s, late)
            if cancel is not None and cancel.is_set():
                raise Aborted("the run is over")
            answer = link.plan_ok[item.plan_id]
            if answer.get("error"):
                raise BackendError(f"device {w} cannot install plan {item.served.plan.method} "
                                   f"for {item.served.plan.model}: {answer['error']}")
            _check_digest(link, answer.get("digest"), item.digest)
    return installed


def _goodbye(hub: Hub) -> None:
    """Tell every live worker the run is over (they drop its state and keep serving)."""
    if not hub.alive:
        return
    live = [link for link in hub.links.values() if link.state == "ready" and not link.dead]
    for link in live:
        hub.send(link.name, Message(MsgType.BYE))
    deadline = time.perf_counter() + 2.0
    with hub.cond:
        while not all(link.bye for link in live) and time.perf_counter() < deadline:
            hub.cond.wait(0.1)


# ---- the run ------------------------------------------------------------------------------
class _Run:
    def __init__(self, scenario: Scenario, hub: Hub, store: BlockStore, sender: _Sender,
                 installed: list[_Installed], timeout_s: float, distinct_inputs: int,
                 log: logging.Logger, on_request: Callable[[RequestRecord], None] | None = None,
                 digests: _Digests | None = None, on_start: Callable[[float], None] | None = None):
        self.scenario, self.hub, self.store, self.sender = scenario, hub, store, sender
        self.installed, self.timeout_s, self.log = installed, timeout_s, log
        self.host = scenario.host
        self.arrivals = arrival_times(scenario.workload, scenario.seed)
        self.on_request = on_request
        self.on_start = on_start
        self.digests = digests or _Digests()
        self.network = scenario.network.kind
        self.check = _Check()
        self.observed: list[Observation] = []
        self.count = 0  # requests completed
        # Guards `observed` and `count` (the serving thread writes, admission reads) and wakes
        # the admission thread when a request completes or serving ends (`stopping`).
        self.progress = threading.Condition()
        self.stopping = threading.Event()
        self.start = time.perf_counter()
        self.inputs: dict[tuple[tuple[int, ...], int], torch.Tensor] = {}
        self.distinct = max(1, distinct_inputs)
        for item in installed:  # made before the run: an input exists when it arrives
            shape = tuple(item.served.prepared.graph.input_shape)
            for k in range(self.distinct):
                if (shape, k) not in self.inputs:
                    generator = torch.Generator().manual_seed(scenario.seed * 1_000_003 + k)
                    self.inputs[(shape, k)] = torch.randn((1, *shape), generator=generator)

    def meta(self) -> dict[str, Any]:
        clocks = {}
        for name, link in self.hub.links.items():
            measured = link.clock.measured()
            offset, uncertainty = link.clock.estimate()
            clocks[name] = {"address": link.address, "offset_s": offset,
                            "uncertainty_s": uncertainty, "same_clock": link.clock.shared,
                            "measured_offset_s": measured.offset if measured else None,
                            "measured_uncertainty_s": measured.uncertainty if measured else None,
                            "samples": link.clock.count, "pid": link.welcome.get("pid")}
        return {"clocks": clocks, "host": self.host,
                "digests": {str(i.plan_id): i.digest for i in self.installed},
                "mismatches": [{"request": r, "max_abs_error": e, "relative_error": rel}
                               for r, e, rel in self.check.failures],
                "resident_bytes": self._resident()}

    def _resident(self) -> dict[str, dict[str, int]]:
        """Each device's resident memory (`halp.runtime.resident`): the host's now, every
        worker's from its latest report; once serving is over, after the last request."""
        with self.hub.cond:
            workers = {name: link.resident for name, link in self.hub.links.items()
                       if link.resident is not None}
        own = resident()
        return {self.host: own, **workers} if own is not None else workers

    def _find(self, served: Served) -> _Installed:
        """The installed plan `served` names; a plan not seen before is installed now (its
        time counts in the request: policies that re-plan per request pay it once per plan)."""
        for item in self.installed:
            if item.served is served or item.served.plan is served.plan:
                return item
        text = served.plan.to_json()
        for item in self.installed:
            if item.served.plan.to_json() == text:
                return item
        missing = [d for d in served.plan.devices if d != self.host
                   and involved(served.plan, d) and d not in self.hub.links]
        if missing:
            raise BackendError(f"the policy's plan uses device {missing[0]}, which has no "
                               "endpoint")
        item = _install(self.hub, [served], self.timeout_s, self.digests,
                        first_id=len(self.installed), cancel=self.stopping)[0]
        self.installed.append(item)
        return item

    def warm_up(self, rounds: int) -> None:
        """Untimed work first: warm-up requests, the reference outputs the requests will be
        checked against, then a pause (`settle_s`): request 0 should find the devices and
        links as idle as the next ones will."""
        request = -1
        for _ in range(rounds):
            for item in self.installed:
                self._dispatch(request, item, time.perf_counter())
                self._complete(request, item)
                self._cleanup(request)
                request -= 1
        for item in self.installed:
            for k in range(min(self.distinct, len(self.arrivals))):
                self._reference(item, k)
        time.sleep(settle_s(self.arrivals))

    def serve(self, policy: Policy, writer: TraceWriter) -> None:
        """Requests enter as they arrive (the admission thread, `_admit`); this thread
        completes them in arrival order (the host's own ops, then the records).

        Request 0 is decided before the run's time zero: every later request is decided while
        the one before it runs, so its plan is chosen when it arrives, and request 0 arrives
        at zero with nothing before it (deciding it on the clock added 6-10 ms to its latency
        alone, which the simulator, deciding in no time, does not have)."""
        first = self._decide(policy, 0, []) if self.arrivals else None
        self.start = time.perf_counter()
        if self.on_start is not None:
            self.on_start(time.monotonic())
        admitted: queue.SimpleQueue[_Admitted | BaseException | None] = queue.SimpleQueue()
        admission = threading.Thread(target=self._admit, args=(policy, admitted, first),
                                     name="halp-host-admission")
        admission.start()
        try:
            while (entry := self._next(admitted)) is not None:
                outcome = self._complete(entry.request, entry.item)
                self._record(entry, outcome, writer)
                self._cleanup(entry.request)
        finally:
            with self.progress:
                self.stopping.set()
                self.progress.notify_all()
            admission.join()

    def _decide(self, policy: Policy, request: int, observed: list[Observation],
                ) -> tuple[Served, _Installed, dict[str, float]]:
        """Ask the policy for `request`'s plan and install it if it is new; with the costs."""
        t0 = time.perf_counter()
        served = policy.serve(request, self.arrivals[request], observed)
        t1 = time.perf_counter()
        item = self._find(served)
        return served, item, {"policy_s": t1 - t0, "install_s": time.perf_counter() - t1}

    def _caught_up(self, request: int) -> bool:
        """May request `request` be decided (the requests before it dispatched), or stop?"""
        return self.count >= request or self.stopping.is_set()

    def _admit(self, policy: Policy, admitted: queue.SimpleQueue,
               first: tuple[Served, _Installed, dict[str, float]] | None = None) -> None:
        """Each request: decide, install the plan if it is new, wait for the arrival, dispatch.

        A request is decided (request 0 already was, `first`: see `serve`) once every earlier
        one has completed, or at its arrival if they have not: with what a policy asked at the
        arrival would know (transfers of completed requests), yet early enough when the
        cluster idles that a new plan reaches the workers before the input; deciding and
        installing lands in a latency only when it runs past the arrival (`queue_s`). Outside
        the CPU quota, like the other I/O threads: on a device this bookkeeping has a core of
        its own."""
        with io_priority():
            try:
                for request, at in enumerate(self.arrivals):
                    arrival = self.start + at
                    with self.progress:
                        self.progress.wait_for(functools.partial(self._caught_up, request),
                                               max(0.0, arrival - time.perf_counter()))
                        if self.stopping.is_set():
                            return
                        observed = list(self.observed)
                    if request == 0 and first is not None:
                        served, item, costs = first
                    else:
                        served, item, costs = self._decide(policy, request, observed)
                    with self.progress:
                        if self.progress.wait_for(self.stopping.is_set,
                                                  max(0.0, arrival - time.perf_counter())):
                            return
                    dispatched = self._dispatch(request, item, arrival)
                    admitted.put(_Admitted(request, at, item, served, dispatched, costs))
                admitted.put(None)
            except BaseException as exc:  # handed to the serving thread
                admitted.put(exc)

    def _next(self, admitted: queue.SimpleQueue) -> _Admitted | None:
        while True:
            try:
                entry = admitted.get(timeout=0.05)
            except queue.Empty:
                self.hub.check()
                continue
            if isinstance(entry, BaseException):
                raise entry
            return entry

    def _cleanup(self, request: int) -> None:
        self.store.drop(request)
        self.hub.drop(request)

    def _dispatch(self, request: int, item: _Installed, arrival: float) -> float:
        """Put the request's input in place (it exists from `arrival` on), tell its workers,
        queue the host's sends. Returns when that was done."""
        plan, graph = item.served.plan, item.served.prepared.graph
        x = self.inputs[(tuple(graph.input_shape), request % self.distinct)]
        self.store.put(request, plan.input_id, (graph.full(0), x), at=arrival)
        for w in item.workers:
            self.hub.send(w, Message(MsgType.START, request=request,
                                     body={"plan_id": item.plan_id}))
        self.sender.submit(request, item.plan_id, plan, graph)
        return time.perf_counter()

    def _complete(self, request: int, item: _Installed) -> _Outcome:
        """The host's own ops of a dispatched request, then its output and the workers' reports."""
        plan, graph = item.served.plan, item.served.prepared.graph
        deadline = time.perf_counter() + self.timeout_s
        self.hub.request = request
        try:
            host_ops = run_compute_ops(plan, graph, self.host, request, self.store,
                                       deadline=deadline)
            output = self.store.wait(request, [plan.output], deadline=deadline,
                                     what="the output")[0][1]
            finish = self.store.time_of(request, plan.output)
            self.sender.wait(request, deadline)
            self.hub.wait_for(lambda: all((request, w) in self.hub.reports for w in item.workers),
                              max(0.0, deadline - time.perf_counter()),
                              lambda: self._late(request, item))
        except Aborted as exc:
            raise BackendError(str(exc)) from None
        with self.hub.cond:
            reports = {w: self.hub.reports[(request, w)] for w in item.workers}
            sent = {op: t for (r, op), t in self.hub.sent.items() if r == request}
            arrived = {op: held for (r, op), held in self.hub.arrived.items() if r == request}
        self.hub.request = None
        return _Outcome(finish, host_ops, reports, sent, arrived, output)

    def _late(self, request: int, item: _Installed) -> str:
        waiting = [w for w in item.workers if (request, w) not in self.hub.reports]
        return (f"request {request}: no report from {', '.join(waiting)} within "
                f"{self.timeout_s:g} s")

    # ---- records ------------------------------------------------------------------------
    def _clock(self, device: str) -> tuple[float, float]:
        if device == self.host:
            return 0.0, 0.0
        return self.hub.links[device].clock.estimate()

    def _record(self, entry: _Admitted, outcome: _Outcome, writer: TraceWriter) -> None:
        request, at, item, served = entry.request, entry.at, entry.item, entry.served
        plan = item.served.plan
        times: dict[str, tuple[float, float, float]] = {}  # op -> (start, end, uncertainty)
        for op_id, t0, t1 in outcome.host_ops:
            times[op_id] = (t0, t1, 0.0)
        sends, arrivals = dict(outcome.sent), dict(outcome.arrived)
        unc: dict[str, float] = {self.host: 0.0}
        for w, report in outcome.reports.items():
            offset, uncertainty = self._clock(w)
            unc[w] = uncertainty
            for op_id, t0, t1 in report.get("ops", []):
                times[str(op_id)] = (float(t0) + offset, float(t1) + offset, uncertainty)
            for op_id, t in report.get("sent", {}).items():
                sends[op_id] = float(t) + offset
            for op_id, (t, nbytes) in report.get("arrived", {}).items():
                arrivals[op_id] = (float(t) + offset, int(nbytes))
        origin = self.start
        for op in plan.ops:
            moved = 0  # bytes that arrived, for a transfer: measured, not the plan's figure
            if isinstance(op, Input):
                start = end = self.start + at
                uncertainty = 0.0
                device = op.device
            elif isinstance(op, Transfer):
                if op.id not in sends or op.id not in arrivals:
                    raise BackendError(f"request {request}: no times for transfer {op.id} "
                                       f"({op.src}->{op.dst})")
                start, (end, moved) = sends[op.id], arrivals[op.id]
                uncertainty = unc.get(op.src, 0.0) + unc.get(op.dst, 0.0)
                device = op.src
                link = op.dst if op.src == self.host else op.src
                with self.progress:
                    self.observed.append(Observation(end - origin, link, moved, end - start))
            else:
                assert isinstance(op, Compute | Gather)
                if op.id not in times:
                    raise BackendError(f"request {request}: no times for {op.id} on {op.device}")
                start, end, uncertainty = times[op.id]
                device = op.device
            writer.op(OpRecord(request=request, op=op.id, kind=op.kind,
                               resource=resource_of(op, self.network), device=device,
                               start=start - origin, end=end - origin,
                               bytes=moved,
                               uncertainty_s=uncertainty,
                               peer=op.dst if isinstance(op, Transfer) else ""))
        error, relative = self._compare(request, item, outcome.output)
        # queue_s: from arrival until the request was dispatched (late only while the previous
        # decision or a new plan's installation ran past the arrival); policy_s and install_s
        # were spent before that, from the previous dispatch on.
        extra = {**served.extra, "relative_error": relative,
                 "queue_s": max(0.0, entry.dispatched - (self.start + at)), **entry.costs}
        record = RequestRecord(
            request=request, arrival=at, finish=outcome.finish - origin, method=plan.method,
            model=plan.model, deadline=self.scenario.workload.deadline,
            predicted_s=served.predicted_s, top1=served.top1, max_abs_error=error, extra=extra)
        writer.request(record)
        with self.progress:
            self.count += 1
            self.progress.notify_all()
        if self.on_request is not None:
            self.on_request(record)

    def _compare(self, request: int, item: _Installed, output: torch.Tensor) -> tuple[float, float]:
        """Outside the timed part: the largest error against the whole model on the host."""
        reference = self._reference(item, request % self.distinct)
        if output.shape != reference.shape:
            raise BackendError(f"request {request}: output shape {tuple(output.shape)}, the "
                               f"model gives {tuple(reference.shape)}")
        error = float((output - reference).abs().max())
        relative = error / max(float(reference.abs().max()), 1e-30)
        if relative > TOLERANCE:
            self.check.failures.append((request, error, relative))
        return error, relative

    def _reference(self, item: _Installed, k: int) -> torch.Tensor:
        """The monolithic model's output for input `k`, computed once per model. Done before
        the run for the plans installed then (`warm_up`): here it would hold the host's thread
        while the next requests wait."""
        prepared = item.served.prepared
        key = (item.served.plan.model, k)
        if key not in self.check.references:
            x = self.inputs[(tuple(prepared.graph.input_shape), k)]
            with torch.no_grad():
                self.check.references[key] = prepared.model(x)
        return self.check.references[key]

    def verdict(self) -> None:
        failures = self.check.failures
        if failures:
            r, error, relative = max(failures, key=lambda f: f[2])
            raise BackendError(f"{len(failures)} of {self.count} requests differ from the "
                               f"monolithic model (worst: request {r}, max abs error {error:.3g}, "
                               f"relative {relative:.3g} > {TOLERANCE})")


__all__ = ["run_host", "load_endpoints", "TOLERANCE"]
