"""The emulated network as a pure description: names, addresses, link rates, CPU shares.

`describe(scenario, tag)` has no side effects; `emu.network` realises what it returns. One
Mininet host per device, all on one bridge:

- **star**: each secondary's link is shaped at its bandwidth in both directions (its host-side
  interface shapes its uploads, the bridge port shapes its downloads). The host's own link is
  *not* shaped: in the star of the simulator every secondary has its own full-duplex link to the
  host, so transfers to different secondaries must not contend on the host's side. A transfer
  between two secondaries crosses both of their links, so it goes at the slower rate, as
  `Cluster.bandwidth` says.
- **shared**: one half-duplex channel. Every packet that any device sends enters the bridge
  through an ingress redirect into one IFB device whose single HTB class is shaped at
  `network.bandwidth`: all transfers, in both directions, contend for that one capacity.
  Secondaries named in `network.links` are also shaped at their own rate, as on a star, so a slow
  station stays slow when it is alone on the channel.

Names are short and carry a per-run tag, so that two runs (or a stale run) never share an
interface or a cgroup name: Mininet names a host's interfaces `<node>-eth0` (at most 15
characters) and its cgroup `/<node>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from halp.errors import BackendError
from halp.network import BandwidthTrace
from halp.scenario import Scenario, TraceLink

if TYPE_CHECKING:
    from emu.devices import DevicePlan

SUBNET_PREFIX = "10.77.0."
PREFIX_LEN = 24
MAX_RATE_BPS = 1e9  # Mininet's HTB parameters are tuned up to 1 Gbps
MIN_RATE_BPS = 8e3
HTB_BURST_BYTES = 15_000  # Mininet's own choice; about one 10 ms CFS period at 10 Mbps
_TAG = re.compile(r"^[a-z0-9]{1,5}$")


@dataclass(frozen=True)
class NodeSpec:
    """One device as a Mininet host."""

    device: str  # the scenario's name
    node: str  # the Mininet name (short; also the cgroup and interface prefix)
    role: str  # host | secondary
    ip: str
    port: int  # where its worker listens (secondaries)
    cpu_share: float  # of one core: its CFS quota (the quota model)
    threads: int
    core: int | None = None  # the dilate model: the core its compute runs on, alone
    slowdown: float = 1.0  # the dilate model: times longer its ops take than on this machine

    @property
    def intf(self) -> str:
        return f"{self.node}-eth0"

    @property
    def endpoint(self) -> str:
        return f"tcp://{self.ip}:{self.port}"


@dataclass(frozen=True)
class LinkSpec:
    """The link between a device and the bridge, shaped when `trace` is set."""

    device: str
    node: str
    trace: BandwidthTrace | None  # None: not shaped (the host's link on a star)

    @property
    def shaped(self) -> bool:
        return self.trace is not None

    @property
    def rate_bps(self) -> float | None:
        return None if self.trace is None else self.trace.rate_at(0.0)

    @property
    def live(self) -> bool:
        """Does its rate change during the run (a bandwidth trace)?"""
        return self.trace is not None and not self.trace.is_constant


@dataclass(frozen=True)
class Topology:
    tag: str
    kind: str  # star | shared
    switch: str
    nodes: tuple[NodeSpec, ...]
    links: tuple[LinkSpec, ...]
    channel_bps: float | None  # the shared channel's capacity; None on a star
    delay_s: float
    jitter_s: float
    loss: float  # probability, 0..1
    cfs_period_us: int
    cores: int
    keep_cpus_awake: bool = True  # see `emu.network.AwakeCpus`
    cpu_model: str = "quota"  # dilate | quota (emu.devices)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def ifb(self) -> str | None:
        """The IFB device that carries the shared channel."""
        return f"ifb{self.tag}" if self.channel_bps is not None else None

    @property
    def host(self) -> NodeSpec:
        return next(n for n in self.nodes if n.role == "host")

    @property
    def secondaries(self) -> list[NodeSpec]:
        return [n for n in self.nodes if n.role != "host"]

    def node(self, device: str) -> NodeSpec:
        for n in self.nodes:
            if n.device == device:
                return n
        raise KeyError(device)

    def link(self, device: str) -> LinkSpec:
        for link in self.links:
            if link.device == device:
                return link
        raise KeyError(device)

    def endpoints(self) -> dict[str, str]:
        """Device name -> ZeroMQ address of its worker (secondaries only)."""
        return {n.device: n.endpoint for n in self.secondaries}

    def cpu_fraction(self, device: str) -> float:
        """What Mininet's CPULimitedHost takes: a share of the whole machine (-1: no quota, a
        dilated device)."""
        if self.cpu_model == "dilate":
            return -1.0
        return self.node(device).cpu_share / self.cores

    @property
    def needs_netem(self) -> bool:
        return bool(self.delay_s or self.jitter_s or self.loss)

    def describe(self) -> str:
        lines = [f"{self.kind} network {self.switch} (tag {self.tag})"]
        for n in self.nodes:
            link = self.link(n.device)
            rate = "unshaped" if not link.shaped else _rate_text(link)
            cpu = (f"core {n.core}, {n.slowdown:.3g}x slower" if n.core is not None
                   else f"cpu {n.cpu_share:.3g} core")
            lines.append(f"  {n.device:<15} {n.node:<8} {n.ip:<12} {cpu}, link {rate}")
        if self.channel_bps is not None:
            lines.append(f"  shared channel {self.ifb}: {self.channel_bps / 1e6:g} Mbps")
        return "\n".join(lines)


def _rate_text(link: LinkSpec) -> str:
    assert link.trace is not None
    if link.live:
        return f"trace of {len(link.trace.values)} steps from {link.trace.values[0] / 1e6:g} Mbps"
    return f"{link.trace.values[0] / 1e6:g} Mbps"


def describe(scenario: Scenario, tag: str, cores: int, devices: DevicePlan | None = None,
             ) -> Topology:
    """The topology that emulates `scenario`; `tag` makes its names unique on this machine.
    `devices`: how each device is held to its speed (`emu.devices.plan_devices`); without it,
    a quota of its written `cpu_share` (a whole core if none)."""
    if not _TAG.match(tag):
        raise BackendError(f"topology tag {tag!r} must be 1-5 lowercase letters or digits")
    if cores < 1:
        raise BackendError(f"need at least one core, got {cores}")
    if len(scenario.devices) > 250:
        raise BackendError("the emulator puts devices on one /24; at most 250")
    host = scenario.host
    nodes, links = [], []
    for i, device in enumerate(scenario.devices):
        held = devices.device(device.name) if devices is not None else None
        share = held.cpu_share if held is not None else device.cpu_share or 1.0
        if share > cores:
            raise BackendError(f"devices.{device.name}.cpu_share {share:g} is more "
                               f"than the {cores} cores of this machine")
        node = f"h{tag}{i}"
        nodes.append(NodeSpec(device=device.name, node=node, role=device.role,
                              ip=f"{SUBNET_PREFIX}{i + 1}", port=device.port,
                              cpu_share=share, threads=device.threads,
                              core=held.core if held is not None else None,
                              slowdown=held.slowdown if held is not None else 1.0 / share))
        links.append(LinkSpec(device.name, node, _link_trace(scenario, device.name, host)))
    network = scenario.network
    channel = network.bandwidth if network.kind == "shared" else None
    if channel is not None:
        _check_rate("network.bandwidth", channel)
    return Topology(tag=tag, kind=network.kind, switch=f"s{tag}", nodes=tuple(nodes),
                    links=tuple(links), channel_bps=channel, delay_s=network.delay,
                    jitter_s=network.jitter, loss=network.loss,
                    cfs_period_us=(devices.cfs_period_us if devices is not None
                                   else scenario.backends.emu.cfs_period_us), cores=cores,
                    keep_cpus_awake=scenario.backends.emu.keep_cpus_awake,
                    cpu_model=devices.model if devices is not None else "quota")


def _link_trace(scenario: Scenario, device: str, host: str) -> BandwidthTrace | None:
    if device == host:
        return None
    if scenario.network.kind == "shared" and device not in scenario.network.links:
        return None  # only the channel limits it
    trace = scenario.link_trace(device)
    where = (f"network.links.{device}" if device in scenario.network.links
             else "network.bandwidth")
    if isinstance(scenario.network.links.get(device), TraceLink):
        where += ".trace"
    for value in trace.values:
        _check_rate(where, value)
    return trace


def _check_rate(where: str, bps: float) -> None:
    if not MIN_RATE_BPS <= bps <= MAX_RATE_BPS:
        raise BackendError(f"{where}: the emulator shapes links from {MIN_RATE_BPS / 1e3:g} kbps "
                           f"to {MAX_RATE_BPS / 1e9:g} Gbps, not {bps:g} bps")


def rate_changes(topology: Topology) -> list[tuple[float, str, float]]:
    """(time_s, device, bps) for every change of a live link after time zero, in time order."""
    changes = []
    for link in topology.links:
        if link.live:
            assert link.trace is not None
            changes += [(t, link.device, v) for t, v in zip(link.trace.times, link.trace.values,
                                                               strict=True) if t > 0]
    return sorted(changes)


def single_host(tag: str, cpu_share: float, threads: int, cfs_period_us: int, cores: int,
                device: str = "profiled") -> Topology:
    """One CPU-limited host on an unshaped link: where `halp profile --emu-cpu-share` measures."""
    if not _TAG.match(tag):
        raise BackendError(f"topology tag {tag!r} must be 1-5 lowercase letters or digits")
    if not 0 < cpu_share <= cores:
        raise BackendError(f"--emu-cpu-share must be in (0, {cores}], got {cpu_share:g}")
    node = NodeSpec(device=device, node=f"h{tag}0", role="host", ip=f"{SUBNET_PREFIX}1",
                    port=5555, cpu_share=cpu_share, threads=threads, slowdown=1.0 / cpu_share)
    return Topology(tag=tag, kind="star", switch=f"s{tag}", nodes=(node,),
                    links=(LinkSpec(device, node.node, None),), channel_bps=None, delay_s=0.0,
                    jitter_s=0.0, loss=0.0, cfs_period_us=cfs_period_us, cores=cores)
