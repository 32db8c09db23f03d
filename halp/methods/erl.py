"""A learned split: an actor network maps the cluster state to per-segment row shares.

The observation is what the host measures: each device's speed factor and each secondary
link's bandwidth (log scale). The action gives, per segment, every device's share of the
segment's input rows; `project` turns any vector into valid shares (negative parts clipped,
each segment normalised, an all-zero segment split equally), so no action is invalid. Shares
become HALP-style splits: the host keeps the top rows, secondaries take the next blocks in
device order, overlapping zones go to the host. The policy file (`halp train`) holds the actor's
weights and the layout it was trained for; it is read with `weights_only=True`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from halp.cluster import Cluster
from halp.errors import HalpError
from halp.latency.model import LatencyModel
from halp.methods.common import host_first, proportional
from halp.methods.halp import Split, plan_segments, timed_split
from halp.model.graph import ModelGraph
from halp.plan import Plan


def observation(cluster: Cluster) -> np.ndarray:
    speeds = [d.speed for d in cluster.devices]
    bandwidth = [np.log10(cluster.bandwidth_bps[n]) - 7.0 for n in cluster.secondaries]  # 10 Mbps -> 0
    return np.asarray(speeds + bandwidth, dtype=np.float32)


def project(action: np.ndarray, segments: int, devices: int) -> np.ndarray:
    """Any action -> valid shares: (segments x devices), non-negative, rows summing to one."""
    a = np.nan_to_num(np.asarray(action, dtype=np.float64).reshape(segments, devices), nan=0.0,
                      posinf=1.0, neginf=0.0)
    a = np.clip(a, 0.0, None)
    sums = a.sum(axis=1, keepdims=True)
    equal = np.full_like(a, 1.0 / devices)
    return np.where(sums > 0, a / np.where(sums > 0, sums, 1.0), equal)


def splits_from_shares(graph: ModelGraph, cluster: Cluster, latency: LatencyModel,
                       cuts: list[int], shares: np.ndarray) -> list[Split]:
    order = tuple(cluster.secondaries)
    out = []
    for (a, b), row in zip(zip(cuts, cuts[1:], strict=False), shares, strict=True):
        height = graph.height(a)
        blocks = host_first(proportional(height, [float(x) for x in row]))
        out.append(timed_split(graph, cluster, latency, a, b, order, blocks))
    return out


def plan_from_shares(graph: ModelGraph, cluster: Cluster, latency: LatencyModel, model: str,
                     cuts: list[int], shares: np.ndarray, method: str = "erl") -> Plan:
    splits = splits_from_shares(graph, cluster, latency, cuts, shares)
    return plan_segments(graph, cluster, latency, model, method, splits)


class Actor(nn.Module):
    """Observation -> per-segment shares in (0, 1) (projected to sum to one per segment)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, action_dim), nn.Sigmoid())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


@dataclass
class PolicyFile:
    actor: Actor
    devices: list[str]
    cuts: list[int]
    model: str
    hidden: int

    def save(self, path: Path) -> None:
        meta = {"devices": self.devices, "cuts": self.cuts, "model": self.model, "hidden": self.hidden,
                "obs_dim": self.actor.net[0].in_features, "action_dim": self.actor.net[-2].out_features}
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"meta": json.dumps(meta), "state_dict": self.actor.state_dict()}, path)

    @classmethod
    def load(cls, path: Path) -> PolicyFile:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            meta = json.loads(data["meta"])
            actor = Actor(meta["obs_dim"], meta["action_dim"], meta["hidden"])
            actor.load_state_dict(data["state_dict"])
        except FileNotFoundError:
            raise HalpError(f"policy file {path} does not exist; train one with `halp train`") from None
        except Exception as exc:  # torch raises several types for a bad file
            raise HalpError(f"cannot read policy file {path}: {exc}") from None
        return cls(actor.eval(), meta["devices"], meta["cuts"], meta["model"], meta["hidden"])

    def shares(self, cluster: Cluster) -> np.ndarray:
        with torch.no_grad():
            action = self.actor(torch.from_numpy(observation(cluster))).numpy()
        return project(action, len(self.cuts) - 1, len(self.devices))


def plan(graph: ModelGraph, cluster: Cluster, latency: LatencyModel, model: str, policy_path: Path) -> Plan:
    policy = PolicyFile.load(policy_path)
    if policy.devices != cluster.names:
        raise HalpError(f"policy {policy_path} was trained for devices {policy.devices}, "
                        f"not {cluster.names}")
    if policy.model != model:
        raise HalpError(f"policy {policy_path} was trained for model {policy.model}, not {model}")
    return plan_from_shares(graph, cluster, latency, model, policy.cuts, policy.shares(cluster))
