"""The cluster a plan runs on: devices with their profiles, and the links between them.

Built from a scenario; planners read it, never change it. `bandwidth_bps` is the planning
view (what the host believes each link carries now); `traces` is the ground truth over time
that the simulator plays back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from halp.latency.profile import Profile
from halp.network import BandwidthTrace

STAR, SHARED = "star", "shared"


@dataclass(frozen=True)
class Device:
    name: str
    profile: Profile
    speed: float = 1.0  # multiplies the profile's speed: 2.0 is twice as fast
    cpu_share: float | None = None  # share of one core the emulator gives it (None: its speed's)
    threads: int = 1  # torch threads it computes with (its power model counts busy cores)
    memory_bytes: float | None = None  # what a plan may hold on it (halp.memory); None: no limit


@dataclass(frozen=True)
class Cluster:
    devices: tuple[Device, ...]
    host: str
    network: str = STAR  # star: a full-duplex link per secondary; shared: one half-duplex channel
    bandwidth_bps: dict[str, float] = field(default_factory=dict)  # per secondary
    traces: dict[str, BandwidthTrace] = field(default_factory=dict)  # per secondary, over time
    delay_s: float = 0.0  # one-way propagation delay of every transfer

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.devices]

    @property
    def memory_limited(self) -> bool:
        """Does any device have a memory limit that plans must respect?"""
        return any(d.memory_bytes is not None for d in self.devices)

    @property
    def secondaries(self) -> list[str]:
        return [d.name for d in self.devices if d.name != self.host]

    def device(self, name: str) -> Device:
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(name)

    def link_of(self, src: str, dst: str) -> str:
        """The secondary whose link a transfer between `src` and `dst` uses."""
        return dst if src == self.host else src

    def bandwidth(self, src: str, dst: str) -> float:
        """Planning bandwidth between two devices; between two secondaries the slower link."""
        if self.host in (src, dst):
            return self.bandwidth_bps[self.link_of(src, dst)]
        return min(self.bandwidth_bps[src], self.bandwidth_bps[dst])

    def with_bandwidth(self, bandwidth_bps: dict[str, float]) -> Cluster:
        return replace(self, bandwidth_bps={**self.bandwidth_bps, **bandwidth_bps})

    def with_speeds(self, speeds: dict[str, float]) -> Cluster:
        devices = tuple(replace(d, speed=speeds.get(d.name, d.speed)) for d in self.devices)
        return replace(self, devices=devices)

    def with_memory(self, memory_bytes: float | None) -> Cluster:
        """The same cluster with every device given `memory_bytes` (None: no limit)."""
        devices = tuple(replace(d, memory_bytes=memory_bytes) for d in self.devices)
        return replace(self, devices=devices)

    def only(self, names: list[str]) -> Cluster:
        """The same cluster with only some devices (the host always stays)."""
        keep = [d for d in self.devices if d.name in names or d.name == self.host]
        return replace(self, devices=tuple(keep),
                       bandwidth_bps={k: v for k, v in self.bandwidth_bps.items() if k in names},
                       traces={k: v for k, v in self.traces.items() if k in names})
