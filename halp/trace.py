"""Traces: one record per executed op and one per request, the same columns on every backend.

Simulated and measured traces join on (request, op). Records are appended to the output folder
as they happen (`TraceWriter`), so a run that dies keeps what it finished.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from halp.plan import Op, Transfer

OPS_FILE, REQUESTS_FILE, CHROME_FILE = "ops.jsonl", "requests.jsonl", "trace.json"


def resource_of(op: Op, network: str) -> str:
    """The resource an op occupies: its device, or its link (`src->dst`, or `channel` when the
    network is one shared channel)."""
    if isinstance(op, Transfer):
        return "channel" if network == "shared" else f"{op.src}->{op.dst}"
    return op.device


@dataclass(slots=True)  # a run holds a million of these: no per-record dict
class OpRecord:
    request: int
    op: str
    kind: str  # input | compute | transfer | gather
    resource: str
    device: str  # where the op ran (the sender for a transfer)
    start: float  # seconds, on the host's clock, from the start of the run
    end: float
    bytes: int = 0
    uncertainty_s: float = 0.0  # clock-offset uncertainty (hardware), 0 elsewhere
    peer: str = ""  # the receiver of a transfer ("" for other ops, and in older traces)

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(slots=True)
class RequestRecord:
    request: int
    arrival: float  # when the input exists on the host
    finish: float  # when the host holds the whole output
    method: str
    model: str
    deadline: float | None = None
    predicted_s: float | None = None  # the planner's / selector's prediction, when it made one
    top1: float | None = None  # accuracy of the model variant served, when known
    max_abs_error: float | None = None  # against the monolithic model, when checked
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def latency(self) -> float:
        return self.finish - self.arrival

    @property
    def met(self) -> bool | None:
        return None if self.deadline is None else self.latency <= self.deadline

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["latency"] = self.latency
        data["met"] = self.met
        return data


@dataclass
class Trace:
    backend: str
    method: str
    ops: list[OpRecord] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def latencies(self) -> list[float]:
        return [r.latency for r in self.requests]

    def by_key(self) -> dict[tuple[int, str], OpRecord]:
        return {(r.request, r.op): r for r in self.ops}


class TraceWriter:
    """Appends records to `ops.jsonl` and `requests.jsonl` as they arrive (flushed per request),
    and keeps them in memory as a `Trace`. Use as a context manager; `out_dir=None` keeps
    records in memory only (sweeps, learning)."""

    def __init__(self, out_dir: Path | None, backend: str, method: str):
        self.trace = Trace(backend=backend, method=method)
        self.out_dir = out_dir
        self._ops = self._requests = None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            self._ops = (out_dir / OPS_FILE).open("w")
            self._requests = (out_dir / REQUESTS_FILE).open("w")

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def op(self, record: OpRecord) -> None:
        self.trace.ops.append(record)
        if self._ops is not None:
            self._ops.write(json.dumps(asdict(record), allow_nan=False) + "\n")

    def request(self, record: RequestRecord) -> None:
        self.trace.requests.append(record)
        if self._requests is not None:
            self._requests.write(json.dumps(record.to_dict(), allow_nan=False) + "\n")
            self._requests.flush()
            assert self._ops is not None
            self._ops.flush()

    def close(self) -> None:
        for handle in (self._ops, self._requests):
            if handle is not None and not handle.closed:
                handle.close()


def replay_records(trace: Trace, writer: TraceWriter) -> None:
    """Put another run's records into `writer`, each request after its ops (the order a live
    run writes them); ops of requests that never finished come last."""
    by_request: dict[int, list[OpRecord]] = {}
    for op in trace.ops:
        by_request.setdefault(op.request, []).append(op)
    for record in trace.requests:
        for op in by_request.pop(record.request, []):
            writer.op(op)
        writer.request(record)
    for ops in by_request.values():
        for op in ops:
            writer.op(op)


def read_trace_dir(out_dir: Path, backend: str = "", method: str = "") -> Trace:
    """Read the records a run wrote (the complete lines; a torn last line is ignored)."""
    trace = Trace(backend=backend, method=method)
    for name, target, cls in ((OPS_FILE, trace.ops, OpRecord), (REQUESTS_FILE, trace.requests, RequestRecord)):
        path = out_dir / name
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                continue
            data.pop("latency", None)
            data.pop("met", None)
            target.append(cls(**data))  # type: ignore[arg-type]
    return trace


def write_chrome_trace(trace: Trace, path: Path) -> None:
    """The Chrome trace event format (opens in Perfetto): one lane per resource. Written event by
    event, so a run of a million ops never holds a second copy of them in memory."""
    lanes = sorted({r.resource for r in trace.ops})
    tid = {name: i for i, name in enumerate(lanes)}

    def events() -> Iterator[dict[str, Any]]:
        for name in lanes:
            yield {"name": "thread_name", "ph": "M", "pid": 0, "tid": tid[name],
                   "args": {"name": name}}
        for r in trace.ops:
            yield {"name": f"{r.op}", "cat": r.kind, "ph": "X", "pid": 0, "tid": tid[r.resource],
                   "ts": r.start * 1e6, "dur": max(0.0, r.end - r.start) * 1e6,
                   "args": {"request": r.request, "bytes": r.bytes, "device": r.device}}
        for q in trace.requests:
            yield {"name": f"request {q.request}", "cat": "request", "ph": "X", "pid": 1,
                   "tid": 0, "ts": q.arrival * 1e6, "dur": q.latency * 1e6,
                   "args": {"model": q.model, "met": q.met}}

    other = {"backend": trace.backend, "method": trace.method}
    with path.open("w") as handle:
        handle.write('{"traceEvents": [')
        for i, event in enumerate(events()):
            handle.write(("," if i else "") + "\n" + json.dumps(event, allow_nan=False))
        handle.write(f'\n], "displayTimeUnit": "ms", "otherData": {json.dumps(other)}}}\n')
