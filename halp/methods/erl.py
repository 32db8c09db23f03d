"""A learned split: an actor network maps the cluster state to per-segment row shares.

The observation is what the host measures: each device's speed factor and each secondary
link's bandwidth (log scale). The action gives, per segment, every device's share of the
segment's input rows; `project` turns any vector into valid shares (negative parts clipped,
each segment normalised, an all-zero segment split equally), so no action is invalid. Shares
become HALP-style splits: the host keeps the top rows, secondaries take the next blocks in
device order, overlapping zones go to the host. The policy file (`halp train`) holds the actor's
weights and the layout it was trained for; it is read as tensors only (`halp.tensorfile`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from halp.tensorfile import load_state_dict_checked, load_tensor_file, state_dict_of


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
        """The policy in `path`, written by `save`. Read as tensors only (`halp.tensorfile`):
        anything else, and a layout or weights that do not fit, is one `HalpError`."""
        if not Path(path).exists():
            raise HalpError(f"{path}: no such policy file; train one with `halp train`")
        data = load_tensor_file(path)
        if not isinstance(data, dict) or not isinstance(data.get("meta"), str) \
                or "state_dict" not in data:
            raise HalpError(f"{path}: not a policy file written by `halp train` (no meta and "
                            "state_dict)")
        meta = _policy_meta(data["meta"], path)
        actor = Actor(meta["obs_dim"], meta["action_dim"], meta["hidden"])
        load_state_dict_checked(actor, state_dict_of(data["state_dict"], path), path)
        return cls(actor.eval(), meta["devices"], meta["cuts"], meta["model"], meta["hidden"])

    def shares(self, cluster: Cluster) -> np.ndarray:
        with torch.no_grad():
            action = self.actor(torch.from_numpy(observation(cluster))).numpy()
        return project(action, len(self.cuts) - 1, len(self.devices))


MAX_POLICY_WIDTH = 4096  # inputs, outputs or hidden units of a policy's actor


def _policy_meta(text: str, path: Path) -> dict[str, Any]:
    """A policy file's layout, checked: the actor's sizes are bounded (an actor is built from
    them before its weights are read), and each field has its type."""
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError):
        raise HalpError(f"{path}: the policy's meta is not JSON") from None
    ints = ("obs_dim", "action_dim", "hidden")
    fields = (*ints, "devices", "cuts", "model")
    if not isinstance(meta, dict) or any(k not in meta for k in fields):
        raise HalpError(f"{path}: the policy's meta lacks a field of {', '.join(ints)}, devices, "
                        "cuts, model")
    for key in ints:
        value = meta[key]
        whole = isinstance(value, int) and not isinstance(value, bool)
        if not whole or not 1 <= value <= MAX_POLICY_WIDTH:
            raise HalpError(f"{path}: the policy's {key} is {repr(value)[:40]}; want a whole "
                            f"number from 1 to {MAX_POLICY_WIDTH}")
    if not (isinstance(meta["devices"], list) and all(isinstance(d, str) for d in meta["devices"])
            and isinstance(meta["cuts"], list)
            and all(isinstance(c, int) and not isinstance(c, bool) for c in meta["cuts"])
            and isinstance(meta["model"], str)):
        raise HalpError(f"{path}: the policy's devices, cuts or model are not a list of names, a "
                        "list of whole numbers and a name")
    devices, segments = len(meta["devices"]), len(meta["cuts"]) - 1
    if devices < 1 or segments < 1 or meta["obs_dim"] != 2 * devices - 1 \
            or meta["action_dim"] != segments * devices:
        raise HalpError(f"{path}: the policy's sizes (obs_dim {meta['obs_dim']}, action_dim "
                        f"{meta['action_dim']}) do not fit its {devices} devices and "
                        f"{segments} segments")
    return meta


def plan(graph: ModelGraph, cluster: Cluster, latency: LatencyModel, model: str, policy_path: Path) -> Plan:
    policy = PolicyFile.load(policy_path)
    if policy.devices != cluster.names:
        raise HalpError(f"policy {policy_path} was trained for devices {policy.devices}, "
                        f"not {cluster.names}")
    if policy.model != model:
        raise HalpError(f"policy {policy_path} was trained for model {policy.model}, not {model}")
    cuts, end = policy.cuts, graph.spatial_end
    if cuts != sorted(set(cuts)) or cuts[0] < 0 or cuts[-1] > end:
        raise HalpError(f"policy {policy_path}: cuts {cuts} are not increasing layer boundaries "
                        f"from 0 to {end}")
    return plan_from_shares(graph, cluster, latency, model, policy.cuts, policy.shares(cluster))
