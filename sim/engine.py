"""The event loop: plans executed in SimPy virtual time.

Servers. Every device is a SimPy process that serves its queue of compute and gather ops one
at a time, strictly in plan order, request after request (FIFO across requests): it takes the
next op, waits until that op's inputs exist, then holds itself for the op's duration. Every
pair of devices that exchanges data also has a sender, such a process for the transfers from
one to the other, so a device computes while it sends, and sends to several peers at once. A transfer additionally holds its link(s), which are `simpy.Resource`s
of capacity one granted first come, first served (a star link direction, or the shared
channel; see `sim.costs`).

Requests. `submit` schedules a compiled plan to arrive at a time; `serve` asks a policy for the
plan of each request when its input arrives, handing it the transfers observed so far. When a
request's last op ends, `on_done(request)` is called with its start and end times per op.

All the durations come from `sim.costs`, but for one thing only a running device knows: a
device whose profile was measured under a CPU quota (an emulated device) runs an op that
follows an idle spell partly at full speed (`after_idle`). The only random draw is the jitter
of each transfer's delay, from the simulator's seeded generator.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import simpy

from halp.cluster import Cluster
from halp.errors import BackendError
from halp.latency.model import LatencyModel
from halp.model.graph import ModelGraph
from halp.plan import Plan
from halp.policy import Observation, Policy
from sim.costs import INPUT, TRANSFER, Compiled, Links, compile_plan

NOT_YET = -1.0  # the end time of an op that has not ended


def after_idle(duration_s: float, idle_s: float, share: float, period_s: float) -> float:
    """An op's duration on a device held to `share` of a core by a CFS quota, whose profile
    (measured with ops back to back) says `duration_s`. Once the device has idled for
    (1 - share) x period, a new period has refilled its quota: the op runs its first
    share x period of CPU at full speed, 1 / share times faster than the profile's rate."""
    if idle_s < (1.0 - share) * period_s:
        return duration_s
    return duration_s - min(duration_s * share, share * period_s) * (1.0 / share - 1.0)


class Link:
    """A link direction or the shared channel: a SimPy resource of capacity one, granted first
    come, first served. Taking a free link costs no event; a busy one queues an event that the
    holder's release hands the link to."""

    __slots__ = ("env", "name", "busy", "queue")

    def __init__(self, env: simpy.Environment, name: str):
        self.env = env
        self.name = name
        self.busy = False
        self.queue: deque[simpy.Event] = deque()

    def wait(self) -> simpy.Event:
        """The event that fires when the link is handed to the caller (it is then busy)."""
        event = self.env.event()
        self.queue.append(event)
        return event

    def release(self) -> None:
        if self.queue:
            self.queue.popleft().succeed()  # stays busy: handed over
        else:
            self.busy = False


class Request:
    """One request in flight: its compiled plan and, per op, when it started and ended."""

    __slots__ = ("id", "compiled", "arrival", "start", "end", "events", "left", "info", "links")

    def __init__(self, request_id: int, compiled: Compiled, arrival: float, info: Any = None):
        self.id = request_id
        self.compiled = compiled
        self.arrival = arrival
        n = len(compiled)
        self.start = [NOT_YET] * n
        self.end = [NOT_YET] * n
        self.events: dict[int, simpy.Event] = {}  # ops someone waits for
        self.left = n
        self.info = info  # what the caller attached (the policy's answer)
        self.links: tuple[tuple[Link, ...], ...] = ()  # per op, the links it holds

    @property
    def finish(self) -> float:
        return self.end[self.compiled.output]

    @property
    def latency(self) -> float:
        return self.finish - self.arrival


class Simulator:
    """Devices, senders and links of one cluster, in one SimPy environment."""

    def __init__(self, cluster: Cluster, *, seed: int = 0, jitter_s: float = 0.0,
                 observe: bool = True, on_done: Callable[[Request], None] | None = None,
                 history: int = 100_000):
        self.env = simpy.Environment()
        self.cluster = cluster
        self.links = Links(cluster)
        self.latency = LatencyModel(cluster)  # the ground truth: the scenario's devices
        self.jitter_s = float(jitter_s)
        self.rng = np.random.default_rng(seed)
        self.observe = observe
        # Finished transfers in the order they ended; only the latest `history` are kept (at
        # most twice that between trims), so a long run's memory stays bounded.
        self.observed: list[Observation] = []
        self.history = history
        self.on_done = on_done
        self.done = 0
        self.submitted = 0
        self._queues: dict[str, deque[tuple[Request, int]]] = {}
        self._wake: dict[str, simpy.Event | None] = {}
        self._links: dict[str, Link] = {}
        self._compiled: dict[tuple[int, int], tuple[Plan, ModelGraph, Compiled]] = {}
        self._held: dict[int, tuple[Compiled, tuple[tuple[Link, ...], ...]]] = {}

    # ---- plans --------------------------------------------------------------------------
    def compile(self, plan: Plan, graph: ModelGraph) -> Compiled:
        """The plan's ops with their durations on this cluster, computed once per plan."""
        key = (id(plan), id(graph))
        hit = self._compiled.get(key)
        if hit is None or hit[0] is not plan or hit[1] is not graph:
            hit = (plan, graph, compile_plan(plan, graph, self.latency, self.links))
            self._compiled[key] = hit
        return hit[2]

    # ---- requests -----------------------------------------------------------------------
    def submit(self, compiled: Compiled, at: float, info: Any = None) -> Request:
        """Schedule a request whose input exists on the host at time `at`."""
        if at < self.env.now:
            raise BackendError(f"cannot submit a request at {at} s, before now ({self.env.now} s)")
        request = Request(self.submitted, compiled, at, info)
        self.submitted += 1
        if at == self.env.now:
            self._arrive(request)
        else:
            self.env.timeout(at - self.env.now).callbacks.append(lambda _: self._arrive(request))
        return request

    def serve(self, policy: Policy, arrivals: Sequence[float]) -> None:
        """Ask `policy` for each request's plan when its input arrives at `arrivals[i]`."""
        self.env.process(self._arrivals(policy, arrivals))

    def _arrivals(self, policy: Policy, arrivals: Sequence[float]):
        env = self.env
        for i, at in enumerate(arrivals):
            if at > env.now:
                yield env.timeout(at - env.now)
            served = policy.serve(i, env.now, self.observed)
            compiled = self.compile(served.plan, served.prepared.graph)
            request = Request(i, compiled, env.now, served)
            self.submitted += 1
            self._arrive(request)

    def _arrive(self, request: Request) -> None:
        now = self.env.now
        request.arrival = now
        c = request.compiled
        held = self._held.get(id(c))
        if held is None or held[0] is not c:
            held = self._held[id(c)] = (c, tuple(tuple(self._link(n) for n in names)
                                                 for names in c.links))
        request.links = held[1]
        queues = self._queues
        for i, (kind, server) in enumerate(zip(c.kind, c.server, strict=True)):
            if kind == INPUT:
                request.start[i] = request.end[i] = now
                request.left -= 1
                continue
            queue = queues.get(server)
            if queue is None:
                queue = self._start_server(server, kind == TRANSFER)
            queue.append((request, i))
            wake = self._wake[server]
            if wake is not None:
                self._wake[server] = None
                wake.succeed()
        if request.left == 0:
            self._complete(request)

    def _complete(self, request: Request) -> None:
        self.done += 1
        if self.on_done is not None:
            self.on_done(request)

    def run(self, until: float | None = None) -> None:
        self.env.run(until=until)
        if until is None and self.done != self.submitted:
            raise BackendError(f"simulation stalled: {self.submitted - self.done} of "
                               f"{self.submitted} requests never finished")

    def _link(self, name: str) -> Link:
        link = self._links.get(name)
        if link is None:
            link = self._links[name] = Link(self.env, name)
        return link

    # ---- servers ------------------------------------------------------------------------
    def _start_server(self, name: str, sends: bool) -> deque[tuple[Request, int]]:
        queue: deque[tuple[Request, int]] = deque()
        self._queues[name] = queue
        self._wake[name] = None
        self.env.process(self._sender(name, queue) if sends else self._device(name, queue))
        return queue

    def _when(self, request: Request, j: int) -> simpy.Event:
        """An event that fires when op `j` of `request` ends."""
        event = request.events.get(j)
        if event is None:
            event = request.events[j] = self.env.event()
        return event

    def _finish(self, request: Request, i: int, start: float) -> None:
        request.start[i] = start
        request.end[i] = self.env.now
        if request.events:
            event = request.events.pop(i, None)
            if event is not None:
                event.succeed()
        request.left -= 1
        if request.left == 0:
            self._complete(request)

    def _device(self, name: str, queue: deque[tuple[Request, int]]):
        env = self.env
        wake, timeout = self._wake, env.timeout
        quota = self.cluster.device(name).profile.cpu_quota
        last_end = -float("inf")
        while True:
            if not queue:
                event = wake[name] = env.event()
                yield event
                continue
            request, i = queue.popleft()
            end = request.end
            for j in request.compiled.inputs[i]:
                if end[j] == NOT_YET:
                    yield self._when(request, j)
            start = env.now
            duration = request.compiled.duration[i]
            if quota is not None:
                duration = after_idle(duration, start - last_end, *quota)
            yield timeout(duration)
            last_end = env.now
            self._finish(request, i, start)

    def _sender(self, name: str, queue: deque[tuple[Request, int]]):
        env, links, wake = self.env, self.links, self._wake
        while True:
            if not queue:
                event = wake[name] = env.event()
                yield event
                continue
            request, i = queue.popleft()
            end = request.end
            c = request.compiled
            for j in c.inputs[i]:
                if end[j] == NOT_YET:
                    yield self._when(request, j)
            held = request.links[i]
            for link in held:
                if link.busy:
                    yield link.wait()
                else:
                    link.busy = True
            start = env.now
            duration = c.duration[i]
            if duration != duration or self.jitter_s:  # NaN: the link follows a trace
                op = c.plan.ops[i]
                delay = links.delay_s
                if self.jitter_s:
                    delay = max(0.0, delay + self.rng.uniform(-self.jitter_s, self.jitter_s))
                duration = links.end_s(op.src, op.dst, op.bytes, start, delay) - start  # type: ignore[union-attr]
            yield env.timeout(duration)
            for link in held:
                link.release()
            self._finish(request, i, start)
            if self.observe:
                op = c.plan.ops[i]
                observed = self.observed
                observed.append(Observation(env.now, self.cluster.link_of(op.src, op.dst),  # type: ignore[union-attr]
                                            c.nbytes[i], env.now - start))
                if len(observed) > 2 * self.history:
                    del observed[:-self.history]

    @property
    def events(self) -> int:
        """How many SimPy events have been scheduled so far (for benchmarks)."""
        return int(str(self.env._eid).split("(")[1].rstrip(")"))  # itertools.count's repr


def simulate(cluster: Cluster, graph: ModelGraph, plans: Plan | Sequence[Plan],
             arrivals: Sequence[float], *, seed: int = 0, jitter_s: float = 0.0) -> list[float]:
    """The fast path for sweeps and learning: the latency of each request, request `i` running
    `plans[i]` (or the one plan for all), no records kept. Same engine, same semantics."""
    many = plans if isinstance(plans, Sequence) else [plans] * len(arrivals)
    if len(many) != len(arrivals):
        raise BackendError(f"{len(many)} plans for {len(arrivals)} arrivals")
    latencies = [0.0] * len(arrivals)

    def done(request: Request) -> None:
        latencies[request.info] = request.latency

    sim = Simulator(cluster, seed=seed, jitter_s=jitter_s, observe=False, on_done=done)
    for i, (plan, at) in enumerate(zip(many, arrivals, strict=True)):
        sim.submit(sim.compile(plan, graph), at, info=i)
    sim.run()
    return latencies
