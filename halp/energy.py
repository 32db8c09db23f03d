"""Energy per request and device, from a trace and the devices' power models.

One function for every backend: it reads `halp.trace` records only. On the simulator the times
are predicted; on the emulator and the Raspberry Pis they are measured, and the energy is the
power model applied to measured times (the report says which, `energy.source`).

The model (`halp.latency.profile.PowerModel`) is additive: a device draws `idle_w` all the
time, and on top of that `compute_w` while it computes (its compute and gather ops;
`busy_core_w` x its threads, up to its cores), `send_w` while a transfer it sends is on the
wire and `receive_w` while one it receives is. Per request r and device d:

    E(r, d) = idle_w x window(r) + compute_w x busy(r, d) + send_w x sending(r, d)
              + receive_w x receiving(r, d)

- `window(r)`: from the request's arrival to its completion (the host holds the output), the
  same for every device that takes part. Where the windows of several requests overlap (under
  load), each is charged an equal share of the overlap, so that over a run a device's idle
  power is counted once: a request's window is the integral over its span of 1 / (requests
  in flight).
- `busy`, `sending`, `receiving`: the time covered by the request's ops of that kind on that
  device (a device sending to two peers at once sends for the time covered once).
- The devices that take part in a request are those with an op of it (computing, gathering,
  sending or receiving). A device of the cluster that a plan leaves idle is not charged: it
  could sleep, or serve something else. What such devices draw idle meanwhile
  (`idle_w x window`) is reported beside, not in the total (`idle_bystanders_mean_j`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from halp.cluster import Cluster
from halp.trace import OpRecord, RequestRecord, Trace

COMPUTE_KINDS = ("compute", "gather")
SIMULATED = "power model applied to simulated times"
MEASURED = "power model applied to measured times"


@dataclass(frozen=True)
class DevicePower:
    """What one device draws (watts): idle, and above idle while computing (with its threads),
    sending and receiving."""

    idle_w: float
    compute_w: float
    send_w: float
    receive_w: float


@dataclass(frozen=True)
class DeviceEnergy:
    """One device's part of one request: the times the model charges and the joules."""

    window_s: float
    busy_s: float
    sending_s: float
    receiving_s: float
    joules: float


def powers_of(cluster: Cluster) -> dict[str, DevicePower | None]:
    """Each device's power from its profile's power model (None: its profile has none)."""
    out: dict[str, DevicePower | None] = {}
    for device in cluster.devices:
        model = device.profile.power
        out[device.name] = None if model is None else DevicePower(
            model.idle_w, model.compute_w(device.threads), model.send_w, model.receive_w)
    return out


def energy_of(power: DevicePower, window_s: float, busy_s: float, sending_s: float,
              receiving_s: float) -> DeviceEnergy:
    """The model applied to one device's times in one request."""
    joules = (power.idle_w * window_s + power.compute_w * busy_s + power.send_w * sending_s
              + power.receive_w * receiving_s)
    return DeviceEnergy(window_s, busy_s, sending_s, receiving_s, joules)


def request_energy(trace: Trace, powers: Mapping[str, DevicePower]) -> dict[int, dict[str, DeviceEnergy]]:
    """Per finished request, per device that takes part in it and has a power model, its
    energy (module docstring)."""
    windows = shared_windows(trace.requests)
    ops: dict[int, list[OpRecord]] = defaultdict(list)
    for record in trace.ops:
        ops[record.request].append(record)
    out: dict[int, dict[str, DeviceEnergy]] = {}
    for request in trace.requests:
        times = device_times(ops.get(request.request, []))
        out[request.request] = {
            device: energy_of(powers[device], windows[request.request], *spans)
            for device, spans in times.items() if device in powers}
    return out


def device_times(records: Iterable[OpRecord]) -> dict[str, tuple[float, float, float]]:
    """Per device taking part in one request's records: (busy, sending, receiving) seconds."""
    kinds: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(
        lambda: {"busy": [], "send": [], "receive": []})
    for r in records:
        if r.kind in COMPUTE_KINDS:
            kinds[r.device]["busy"].append((r.start, r.end))
        elif r.kind == "transfer":
            kinds[r.device]["send"].append((r.start, r.end))
            kinds[receiver(r)]["receive"].append((r.start, r.end))
    return {device: (covered_s(k["busy"]), covered_s(k["send"]), covered_s(k["receive"]))
            for device, k in kinds.items()}


def receiver(record: OpRecord) -> str:
    """Who receives a transfer: its `peer`, or in a trace older than that field the end of its
    link (`src->dst`)."""
    if record.peer:
        return record.peer
    return record.resource.partition("->")[2] or record.resource


def covered_s(intervals: list[tuple[float, float]]) -> float:
    """Time covered by the intervals (overlaps counted once)."""
    total, until = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= until:
            continue
        total += end - max(start, until)
        until = end
    return total


def shared_windows(requests: Iterable[RequestRecord]) -> dict[int, float]:
    """Each request's window: the integral over its span of 1 / (requests in flight), so that
    overlapping windows share their overlap and the windows add up to the union of spans."""
    spans = {r.request: (r.arrival, max(r.arrival, r.finish)) for r in requests}
    events = sorted({t for span in spans.values() for t in span})
    # share[i]: the integral of 1 / in-flight from the first event to events[i]
    starts: dict[float, int] = defaultdict(int)
    ends: dict[float, int] = defaultdict(int)
    for a, b in spans.values():
        if b > a:
            starts[a] += 1
            ends[b] += 1
    share, flying, acc = {}, 0, 0.0
    previous = None
    for t in events:
        if previous is not None and flying:
            acc += (t - previous) / flying
        share[t] = acc
        flying += starts[t] - ends[t]
        previous = t
    return {request: share[b] - share[a] for request, (a, b) in spans.items()}


def energy_report(trace: Trace, powers: Mapping[str, DevicePower | None],
                  measured: bool) -> dict[str, object]:
    """What a report says of energy: per request the mean total and the mean per device (over
    the requests a device takes part in), the total of the run, and where the figures come
    from; or, when a device that takes part has no power model, only that."""
    involved = sorted({d for r in trace.ops if r.kind != "input"
                       for d in ((r.device, receiver(r)) if r.kind == "transfer" else (r.device,))})
    missing = [d for d in involved if powers.get(d) is None]
    if missing or not trace.requests:
        note = (f"no power model for {', '.join(missing)}" if missing
                else "no request finished")
        return {"source": None, "note": note, "mean_j": None, "mean_per_device_j": None,
                "total_j": None, "idle_bystanders_mean_j": None}
    known = {d: p for d, p in powers.items() if p is not None}
    energies = request_energy(trace, known)
    totals = [sum(e.joules for e in per.values()) for per in energies.values()]
    windows = shared_windows(trace.requests)
    idle = [sum(p.idle_w * windows[r] for d, p in known.items() if d not in per)
            for r, per in energies.items()]
    per_device: dict[str, list[float]] = defaultdict(list)
    for per in energies.values():
        for device, e in per.items():
            per_device[device].append(e.joules)
    return {"source": MEASURED if measured else SIMULATED, "note": "",
            "mean_j": sum(totals) / len(totals),
            "mean_per_device_j": {d: sum(v) / len(v) for d, v in sorted(per_device.items())},
            "total_j": sum(totals),
            # not in the figures above: what the devices a request leaves out draw idle meanwhile
            "idle_bystanders_mean_j": sum(idle) / len(idle),
            "power_w": {d: vars(p) for d, p in sorted(known.items()) if d in per_device}}
