"""What every device does with a plan, whatever carries the bytes: host and workers share it.

A device runs its Compute and Gather ops one at a time in plan order (`run_compute_ops`, on
its compute thread), and prepares its outgoing Transfers to each peer in plan order as soon as
each one's input block exists (`send_ops`, on that peer's sender thread, `SendQueues`). Blocks
live in a `BlockStore` keyed by (request, op id); a thread that needs a block waits on the
store, and a failure anywhere wakes every waiter. The compute step itself is
`halp.model.slicing.run_region`: no sockets here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import torch

from halp.errors import BackendError
from halp.model.graph import ModelGraph, Region
from halp.model.slicing import assemble, crop, run_region
from halp.model.zoo import ModelSpec
from halp.plan import Compute, Gather, Plan, Transfer, reads
from halp.runtime.dilation import from_environment as dilation_from_environment
from halp.runtime.files import FACTORY, WEIGHTS, digests_of

Block = tuple[Region, torch.Tensor]


class Aborted(BackendError):
    """The run this work belonged to failed or was reset."""


class BlockStore:
    """Blocks by (request, op id), with the time each appeared, and waiting with failure."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._blocks: dict[tuple[int, str], Block] = {}
        self._times: dict[tuple[int, str], float] = {}
        self._sent: set[tuple[int, str]] = set()
        self._failure: str | None = None
        self.generation = 0

    def put(self, request: int, op: str, block: Block, at: float | None = None,
            generation: int | None = None) -> float:
        """Store a block; a block of an older generation (a reset run) is dropped."""
        at = time.perf_counter() if at is None else at
        with self._cond:
            if generation is not None and generation != self.generation:
                return at
            self._blocks[(request, op)] = block
            self._times[(request, op)] = at
            self._cond.notify_all()
        return at

    def time_of(self, request: int, op: str) -> float:
        with self._cond:
            return self._times[(request, op)]

    def wait(self, request: int, ops: tuple[str, ...] | list[str], generation: int | None = None,
             deadline: float | None = None, what: str = "") -> list[Block]:
        """The blocks `ops` of `request`, once they all exist."""
        keys = [(request, op) for op in ops]
        with self._cond:
            while True:
                self._check(generation)
                if all(k in self._blocks for k in keys):
                    return [self._blocks[k] for k in keys]
                left = None if deadline is None else deadline - time.perf_counter()
                if left is not None and left <= 0:
                    missing = [k[1] for k in keys if k not in self._blocks]
                    raise BackendError(f"request {request}: {what or 'an op'} waited too long "
                                       f"for {', '.join(missing)}")
                self._cond.wait(0.5 if left is None else min(left, 0.5))

    def mark_sent(self, request: int, op: str) -> None:
        """Transfer `op` left this device (handed to its socket, or dropped with its link)."""
        with self._cond:
            self._sent.add((request, op))
            self._cond.notify_all()

    def wait_sent(self, request: int, sends: list[Transfer], generation: int | None = None,
                  deadline: float | None = None) -> None:
        """Wait until each of `sends` (in plan order) has left, up to the first whose input
        does not exist yet (its sender is held there; nothing after it can leave first)."""
        with self._cond:
            while True:
                self._check(generation)
                pending = False
                for op in sends:
                    if (request, op.id) in self._sent:
                        continue
                    pending = all((request, i) in self._blocks for i in op.inputs)
                    break
                if not pending:
                    return
                left = None if deadline is None else deadline - time.perf_counter()
                if left is not None and left <= 0:
                    raise BackendError(f"request {request}: a send waited too long to leave")
                self._cond.wait(0.5 if left is None else min(left, 0.5))

    def _check(self, generation: int | None) -> None:
        if self._failure is not None:
            raise Aborted(self._failure)
        if generation is not None and generation != self.generation:
            raise Aborted("the run was reset")

    def fail(self, message: str) -> None:
        with self._cond:
            if self._failure is None:
                self._failure = message
            self._cond.notify_all()

    @property
    def failure(self) -> str | None:
        return self._failure

    def drop(self, request: int) -> None:
        with self._cond:
            for key in [k for k in self._blocks if k[0] == request]:
                del self._blocks[key]
                self._times.pop(key, None)
            self._sent = {k for k in self._sent if k[0] != request}

    def reset(self) -> int:
        """Forget everything and any failure; waiters of older generations abort."""
        with self._cond:
            self._blocks.clear()
            self._times.clear()
            self._sent.clear()
            self._failure = None
            self.generation += 1
            self._cond.notify_all()
            return self.generation


class Mailbox:
    """A queue that wakes a ZeroMQ poll loop: put from any thread, drain in the I/O thread."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def fileno(self) -> int:
        return self._read

    def put(self, item: Any) -> None:
        self._queue.put(item)
        try:
            os.write(self._write, b"\0")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already
        except OSError as exc:
            if exc.errno != errno.EBADF:
                raise

    def drain(self) -> Iterator[Any]:
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                yield self._queue.get_nowait()
            except queue.Empty:
                return

    def close(self) -> None:
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass


# ---- thread priority ------------------------------------------------------------------------
IO_NICE = -5  # I/O threads' nice value where allowed (root); compute threads keep 0
# Set by the emulator: an open, writable file descriptor of the `tasks` file of a cgroup whose
# CPU time is not limited (a descriptor, because an emulated host's mount namespace has no
# /sys/fs/cgroup). A device's I/O threads join it, so only its compute is held to its share.
IO_CGROUP_FD_ENV = "HALP_IO_CPU_TASKS_FD"
ZMQ_THREADS = "ZMQbg/"  # how libzmq names its I/O and reaper threads (once they have started)


@contextlib.contextmanager
def io_priority() -> Iterator[None]:
    """Run the calling I/O thread (socket loop, sender) ahead of the device's compute thread
    while inside. On a device limited to part of a core, a woken I/O thread otherwise queues
    behind the compute thread for the group's CPU time, and a block waits, ready, for whole
    CFS periods. Only a privileged process may raise a priority; elsewhere this changes
    nothing (on a real multi-core device the threads do not compete anyway).

    Where the emulator hands over an unlimited cgroup (`HALP_IO_CPU_TASKS_FD`), the thread and
    libzmq's threads also leave the device's CPU quota for good (call this only in threads
    that do nothing but I/O): an emulated device is then a share of a core for its compute
    (torch's threads) with its I/O beside it, as on the other cores of a Raspberry Pi, rather
    than in the gaps of one quota."""
    tid = threading.get_native_id()
    name_os_thread()
    _leave_cpu_quota(tid)
    try:
        before: int | None = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, IO_NICE)
    except OSError:  # not privileged: the thread keeps its priority
        before = None
    try:
        yield
    finally:
        if before is not None:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, tid, before)


def _leave_cpu_quota(tid: int) -> None:
    """Move thread `tid` and libzmq's threads to the unlimited cgroup, if one was handed over."""
    fd = os.environ.get(IO_CGROUP_FD_ENV)
    if not fd:
        return
    deadline = time.monotonic() + 1.0
    while True:  # libzmq names its threads just after starting them
        names = {t: _thread_name(t) for t in _threads()}
        zmq_threads = [t for t, name in names.items() if name.startswith(ZMQ_THREADS)]
        if any("IO" in names[t] for t in zmq_threads) or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    for thread in [tid, *zmq_threads]:
        try:
            os.write(int(fd), str(thread).encode())
        except (OSError, ValueError) as exc:
            # Said, not raised: an I/O thread that died here would hang the run instead.
            print(f"warning: thread {thread} stays in the CPU quota ({IO_CGROUP_FD_ENV}={fd}: "
                  f"{getattr(exc, 'strerror', None) or exc})", file=sys.stderr, flush=True)
            return


def name_os_thread() -> None:
    """Give the calling (non-main) thread its Python name in the kernel too (`top -H`, /proc),
    so a device's compute and I/O threads can be told apart from outside. Best effort."""
    thread = threading.current_thread()
    if thread is threading.main_thread():
        return  # its name is the process's
    with contextlib.suppress(OSError):
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as handle:
            handle.write(thread.name[:15])


def _threads() -> list[int]:
    return [int(t) for t in os.listdir("/proc/self/task")]


def _thread_name(tid: int) -> str:
    try:
        with open(f"/proc/self/task/{tid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return ""


# ---- what a device does with its ops --------------------------------------------------------
def compute_ops(plan: Plan, device: str) -> list[Compute | Gather]:
    return [op for op in plan.ops if isinstance(op, Compute | Gather) and op.device == device]


def sends_of(plan: Plan, device: str) -> list[Transfer]:
    return [op for op in plan.ops if isinstance(op, Transfer) and op.src == device]


def receives_of(plan: Plan, device: str) -> list[Transfer]:
    return [op for op in plan.ops if isinstance(op, Transfer) and op.dst == device]


def involved(plan: Plan, device: str) -> bool:
    return bool(compute_ops(plan, device) or sends_of(plan, device) or receives_of(plan, device))


def run_op(op: Compute | Gather, graph: ModelGraph, pieces: list[Block]) -> Block:
    """Compute or stitch one op's block from its input blocks (exactly as `halp.execute`)."""
    where = reads(op, graph)
    assert where is not None
    need = where[2]
    data = assemble(need, pieces)
    if isinstance(op, Compute):
        return op.out, run_region(graph, op.start, op.stop, data, need, op.out)
    return op.region, data


def run_compute_ops(plan: Plan, graph: ModelGraph, device: str, request: int, store: BlockStore,
                    generation: int | None = None, deadline: float | None = None,
                    ) -> list[tuple[str, float, float]]:
    """Run `device`'s Compute and Gather ops of `plan` in plan order; (op, start, end) each.

    Sends come first: before an op starts, the device's earlier Transfers (in plan order) whose
    input exists must have left. On a CPU-limited device the compute thread would otherwise
    starve the threads that send, holding a secondary back by whole CFS periods while the
    plan (and the simulator) has the block on the wire.

    On a dilated device (`halp.runtime.dilation`) each op runs on the device's core and its
    block appears only once the op has taken its (warm) CPU time times the device's slowdown."""
    dilation = dilation_from_environment()
    if dilation is not None:
        dilation.pin()
    records = []
    position = {op.id: i for i, op in enumerate(plan.ops)}
    sends = sends_of(plan, device)
    for op in compute_ops(plan, device):
        pieces = store.wait(request, op.inputs, generation, deadline, what=f"{op.id} on {device}")
        earlier = [t for t in sends if position[t.id] < position[op.id]]
        if earlier:
            store.wait_sent(request, earlier, generation, deadline)
        t0 = time.perf_counter()
        if dilation is None:
            block = run_op(op, graph, pieces)
        else:
            block = dilation.run(partial(run_op, op, graph, pieces), t0)
        t1 = store.put(request, op.id, block, generation=generation)
        records.append((op.id, t0, t1))
    return records


def send_ops(plan: Plan, graph: ModelGraph, device: str, request: int, store: BlockStore,
             send: Callable[[Transfer, Block], None], generation: int | None = None,
             deadline: float | None = None, to: str | None = None) -> None:
    """Hand each of `device`'s Transfers (to peer `to`, or to all), in plan order, to `send` as
    soon as its input exists."""
    for op in sends_of(plan, device):
        if to is not None and op.dst != to:
            continue
        pieces = store.wait(request, op.inputs, generation, deadline, what=f"{op.id} on {device}")
        where = reads(op, graph)
        assert where is not None
        need = where[2]
        data = crop(assemble(need, pieces), need, op.region).contiguous()
        send(op, (op.region, data))


def destinations(plan: Plan, device: str) -> list[str]:
    """The peers `device` sends to in `plan`."""
    return sorted({op.dst for op in sends_of(plan, device)})


class SendQueues:
    """A sender thread per peer, made on first use: a device's Transfers to one peer leave in
    plan order, request after request, and a transfer whose input is not there yet holds back
    only its own peer's queue, not the blocks ready for the others (the simulator's senders).
    `run(peer, job)` does a job's sends to that peer; it must not raise."""

    def __init__(self, name: str, run: Callable[[str, Any], None]):
        self.name, self.run = name, run
        self._queues: dict[str, queue.SimpleQueue[Any]] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def put(self, peers: list[str], job: Any) -> None:
        for peer in peers:
            with self._lock:
                jobs = self._queues.get(peer)
                if jobs is None:
                    jobs = self._queues[peer] = queue.SimpleQueue()
                    thread = threading.Thread(target=self._loop, args=(peer, jobs),
                                              name=f"{self.name}-{peer}")
                    thread.start()
                    self._threads.append(thread)
            jobs.put(job)

    def _loop(self, peer: str, jobs: queue.SimpleQueue[Any]) -> None:
        with io_priority():
            while (job := jobs.get()) is not None:
                self.run(peer, job)

    def stop(self) -> None:
        """Finish the jobs queued, then end every thread."""
        with self._lock:
            for jobs in self._queues.values():
                jobs.put(None)
            threads, self._threads, self._queues = self._threads, [], {}
        for thread in threads:
            thread.join()


def check_block(plan: Plan, graph: ModelGraph, op_id: str, device: str, region: Region | None,
                tensor: torch.Tensor | None) -> Transfer:
    """The Transfer a received block claims to be, after checking that it fits the plan."""
    try:
        op = plan.op(op_id)
    except KeyError:
        raise BackendError(f"block for unknown op {op_id!r}") from None
    if not isinstance(op, Transfer) or op.dst != device:
        raise BackendError(f"block {op_id} is not a transfer to {device}")
    if region != op.region or tensor is None:
        raise BackendError(f"block {op_id} holds {region}, the plan says {op.region}")
    shape = graph.shape(op.boundary)
    if tensor.dim() == 4:
        ok = len(shape) == 3 and tuple(tensor.shape[1:]) == (shape[0], op.region.rows.size,
                                                             op.region.cols.size)
    else:  # a flat map: its rows are its features
        ok = tensor.dim() == 2 and tensor.shape[1] == op.region.rows.size
    if not ok or tensor.dtype != torch.float32:
        raise BackendError(f"block {op_id} has shape {tuple(tensor.shape)} {tensor.dtype}, which "
                           f"does not fit {op.region} of a map {shape}")
    return op


# ---- model specs on the wire ----------------------------------------------------------------
def spec_to_dict(spec: ModelSpec) -> dict[str, Any]:
    return {"name": spec.name, "width": spec.width, "resolution": spec.resolution,
            "seed": spec.seed, "weights": spec.weights, "factory": spec.factory,
            "input_shape": list(spec.input_shape) if spec.input_shape else None,
            "digests": digests_of(spec)}


def _digests(data: Any) -> tuple[tuple[str, str], ...]:
    if not (isinstance(data, dict) and all(
            role in (WEIGHTS, FACTORY) and isinstance(d, str) and len(d) == 64
            and all(c in "0123456789abcdef" for c in d) for role, d in data.items())):
        raise ValueError("digests are not sha256 per model file")
    return tuple(sorted(data.items()))


def spec_from_dict(data: Any) -> ModelSpec:
    if not isinstance(data, dict):
        raise BackendError("model spec is not a mapping")
    try:
        shape = data.get("input_shape")
        return ModelSpec(name=str(data["name"]), width=float(data["width"]),
                         resolution=int(data["resolution"]), seed=int(data["seed"]),
                         weights=str(data["weights"]) if data.get("weights") else None,
                         factory=str(data["factory"]) if data.get("factory") else None,
                         input_shape=tuple(int(x) for x in shape) if shape else None,  # type: ignore[arg-type]
                         digests=_digests(data.get("digests") or {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise BackendError(f"bad model spec: {exc}") from None
