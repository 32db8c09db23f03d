"""A worker's compute thread and sender threads: the model's work, off the I/O thread.

The I/O thread queues jobs and never waits for one. The compute thread takes them in order: it
builds the model a new host asks for (`BuildModel`), checks and installs plans (`InstallPlan`:
the model then keeps only the weights of the stages they compute here), and runs each
request's Compute and Gather ops in plan order (`RunRequest`, `run_compute_ops`). A sender
thread per peer prepares a request's Transfers to that peer in plan order as soon as their
inputs exist (`SendQueues`, `send_ops`). None of them touches a socket: each hands what came
of a job (`Outcome`) to the I/O thread through the mailbox, and the I/O thread sends it. A job
of an older generation of the block store (its run ended or was reset since) is skipped, and
the I/O thread drops its outcomes.

Who touches what: the compute thread alone uses the model cache and writes the plan table; the
sender threads read the table, as does the I/O thread, which also clears it when a run ends.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from halp.model.zoo import ModelSpec
from halp.plan import Plan, Transfer
from halp.runtime.device import (
    Aborted,
    Block,
    BlockStore,
    Mailbox,
    SendQueues,
    name_os_thread,
    run_compute_ops,
    send_ops,
)
from halp.runtime.installed import Installed, ModelCache, install


# ---- jobs, from the I/O thread --------------------------------------------------------------
@dataclass(frozen=True)
class BuildModel:
    """Build the model a new host session asks for (its digest goes in the WELCOME)."""

    generation: int
    spec: ModelSpec


@dataclass(frozen=True)
class InstallPlan:
    """Check and install a plan for `device` (this worker's), which then holds the weights of
    the stages its installed plans compute on it and no others (`halp.runtime.installed`)."""

    generation: int
    spec: ModelSpec
    plan_id: int
    plan: Plan
    device: str


@dataclass(frozen=True)
class RunRequest:
    """A request's work on `device`: its ops on the compute thread, its sends to each peer on
    that peer's sender thread."""

    generation: int
    request: int
    plan_id: int
    device: str


# ---- outcomes, to the I/O thread ------------------------------------------------------------
@dataclass(frozen=True)
class ModelBuilt:
    generation: int
    digest: str | None
    error: str | None


@dataclass(frozen=True)
class PlanChecked:
    generation: int
    plan_id: int
    digest: str | None
    error: str | None


@dataclass(frozen=True)
class BlockReady:
    """A block to send now: the I/O thread signs it and hands it to the socket."""

    generation: int
    request: int
    plan_id: int
    op: Transfer
    block: Block


@dataclass(frozen=True)
class Computed:
    generation: int
    request: int
    records: list[tuple[str, float, float]]  # (op, start, end) per Compute and Gather op


@dataclass(frozen=True)
class PeerDone:
    """Every block of `request` to one peer is ready (and handed over before this)."""

    generation: int
    request: int


@dataclass(frozen=True)
class Failed:
    generation: int
    request: int
    error: str


Outcome = ModelBuilt | PlanChecked | BlockReady | Computed | PeerDone | Failed


class ComputeThreads:
    """The compute thread (started here) and the sender threads (started on first use).
    `plans` is the worker's plan table, which the compute thread fills."""

    def __init__(self, store: BlockStore, mailbox: Mailbox, plans: dict[int, Installed],
                 models: ModelCache):
        self.store, self.mailbox, self.plans, self.models = store, mailbox, plans, models
        self._jobs: queue.SimpleQueue[BuildModel | InstallPlan | RunRequest | None] = (
            queue.SimpleQueue())
        self._senders = SendQueues("halp-send", self._send_to)
        self._thread = threading.Thread(target=self._loop, name="halp-compute")
        self._thread.start()

    def put(self, job: BuildModel | InstallPlan) -> None:
        self._jobs.put(job)

    def run(self, job: RunRequest, compute: bool, peers: list[str]) -> None:
        """Queue a request's ops (if this device `compute`s any) and its sends to `peers`."""
        if compute:
            self._jobs.put(job)
        self._senders.put(peers, job)

    def stop(self) -> None:
        """Let every thread finish the jobs queued, then end it."""
        self._jobs.put(None)
        self._senders.stop()
        self._thread.join()

    # ---- the compute thread ---------------------------------------------------------------
    def _loop(self) -> None:
        name_os_thread()
        while (job := self._jobs.get()) is not None:
            if isinstance(job, BuildModel):
                self._build(job)
            elif isinstance(job, InstallPlan):
                self._install(job)
            else:
                self._guarded(job, partial(self._compute, job))

    def _build(self, job: BuildModel) -> None:
        try:
            digest, error = self.models.get(job.spec).digest, None
        except Exception as exc:  # reported to the host; the worker keeps serving
            digest, error = None, _error(exc)
        self.mailbox.put(ModelBuilt(job.generation, digest, error))

    def _install(self, job: InstallPlan) -> None:
        try:
            installed, digest = install(self.models, job.spec, job.plan, job.device,
                                        list(self.plans.values()))
            if job.generation == self.store.generation:
                self.plans[job.plan_id] = installed
            self.mailbox.put(PlanChecked(job.generation, job.plan_id, digest, None))
        except Exception as exc:  # reported to the host; the worker keeps serving
            self.mailbox.put(PlanChecked(job.generation, job.plan_id, None, _error(exc)))

    def _compute(self, job: RunRequest, installed: Installed) -> None:
        """A request's Compute and Gather ops here, in plan order."""
        records = run_compute_ops(installed.plan, installed.graph, job.device, job.request,
                                  self.store, job.generation)
        self.mailbox.put(Computed(job.generation, job.request, records))

    # ---- a sender thread ------------------------------------------------------------------
    def _send_to(self, peer: str, job: RunRequest) -> None:
        """A request's sends to `peer`, in plan order (its `SendQueues` thread)."""
        def send(op: Transfer, block: Block) -> None:
            self.mailbox.put(BlockReady(job.generation, job.request, job.plan_id, op, block))

        def send_all(installed: Installed) -> None:
            send_ops(installed.plan, installed.graph, job.device, job.request, self.store, send,
                     job.generation, to=peer)
            self.mailbox.put(PeerDone(job.generation, job.request))

        self._guarded(job, send_all)

    # ---- either ---------------------------------------------------------------------------
    def _guarded(self, job: RunRequest, work: Callable[[Installed], None]) -> None:
        """Run `work` for a request of the current run; a failure is reported to the host."""
        installed = self.plans.get(job.plan_id)
        if installed is None or job.generation != self.store.generation:
            return
        try:
            work(installed)
        except Aborted:
            return
        except Exception as exc:  # reported to the host, not fatal here
            self.mailbox.put(Failed(job.generation, job.request, _error(exc)))


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"
