"""Device profiles: the fitted per-layer-type coefficients of one device, read from a file.

A profile predicts a layer's time as a non-negative linear function of what the layer does:

    t = intercept_s + s_per_flop * flops + s_per_in_byte * in_bytes
        + s_per_out_byte * out_bytes + s_per_weight_byte * weight_bytes
        + s_per_flop_per_tap * flops / taps

with one set of coefficients per layer kind (conv, dwconv, pool, linear, elementwise, merge). `taps` is
the number of kernel positions (9 for a 3x3 convolution, 1 for a 1x1 one or a layer without a
window), so the last term is the part of the cost that grows with channels and output pixels
but not with the kernel: it lets a 1x1 (pointwise) convolution run at a lower FLOP rate than a
3x3 one, which it does (less arithmetic per byte moved). A merge (an add or a channel
concatenation inside a block) counts all its inputs in `in_bytes` and `flops`; a profile
without a `merge` section (measured on chain models only, before merges were a kind of their
own) predicts merges with its elementwise coefficients. A fused run of layers adds
`op_overhead_s` once. Every profile file says where and how it was measured,
or, when derived, from what and under which assumption.

A profile may also carry a power model (`power:`, `PowerModel`): what the device draws idle,
per core busy computing, and while its network interface sends or receives, each figure with
its source in `provenance.power`. A profile without one gives no energy figures
(`halp.energy`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halp.errors import HalpError, shown
from halp.model.graph import (
    CONV,
    DWCONV,
    ELEMENTWISE,
    KINDS,
    LINEAR,
    MERGE,
    RESHAPE,
    LayerSpec,
    Region,
    shape_bytes,
)
from halp.names import SAFE_NAME_RULE, is_safe_name
from halp.units import MAX_QUANTITY_TEXT
from halp.yamlfile import MAX_YAML_BYTES, read_yaml

FEATURES = ("intercept_s", "s_per_flop", "s_per_in_byte", "s_per_out_byte", "s_per_weight_byte",
            "s_per_flop_per_tap")
REPO_ROOT = Path(__file__).resolve().parents[2]
# The CFS period of the host `halp profile --emu-cpu-share` measures in (emu/profile.py), and
# of a profile's quota when its provenance does not say.
PROFILE_CFS_PERIOD_US = 10_000
# Every coefficient and overhead of a profile is seconds (per op, FLOP or byte) from zero to a
# minute: no device takes a minute per unit, and a bound keeps every prediction finite.
PROFILE_SECONDS_RANGE = (0.0, 60.0)
MAX_PERCENT = 1e6  # held_out_mape, in percent
# The provenance's numbers that predictions and checks read (cpu_quota, halp.validate), with
# the ranges a scenario's devices and emulator take (halp.scenario).
PROVENANCE_RANGES = {"cpu_share": (0.0, 64.0), "cfs_period_us": (1000.0, 1_000_000.0),
                     "threads": (1.0, 64.0)}
# The provenance's probes: seconds per probe layer (halp.latency.probe).
PROVENANCE_PROBES = ("probe", "quota_probe")
MAX_PROFILE_BYTES = MAX_YAML_BYTES
# A power model's watts: no edge device draws a kilowatt; and the cores it counts.
POWER_WATTS_RANGE = (0.0, 1000.0)
POWER_CORES_RANGE = (1.0, 1024.0)
POWER_WATTS = ("idle_w", "busy_core_w", "send_w", "receive_w")
POWER_KEYS = (*POWER_WATTS, "cores")


@dataclass(frozen=True)
class PowerModel:
    """What a device draws, in watts: `idle_w` whenever it is on, and on top of that
    `busy_core_w` per core busy computing (up to `cores`), `send_w` while its network
    interface sends and `receive_w` while it receives. Additive, so a device that computes
    while it sends draws both."""

    idle_w: float
    busy_core_w: float
    cores: int
    send_w: float
    receive_w: float

    def compute_w(self, threads: int) -> float:
        """Watts above idle while computing with `threads` threads (one core each)."""
        return self.busy_core_w * min(threads, self.cores)

    def to_dict(self) -> dict[str, float | int]:
        return {"idle_w": self.idle_w, "busy_core_w": self.busy_core_w, "cores": self.cores,
                "send_w": self.send_w, "receive_w": self.receive_w}


@dataclass(frozen=True)
class Profile:
    name: str
    coefficients: dict[str, dict[str, float]]
    op_overhead_s: float = 0.0
    message_overhead_s: float = 0.0  # per block sent, on top of its bits on the wire
    message_s_per_byte: float = 0.0  # per byte of a block: signing and checking it (halp.latency.hop)
    copy_s_per_byte: float = 0.0  # stitching rows together (gather)
    provenance: dict[str, Any] = field(default_factory=dict)
    held_out_mape: float | None = None
    path: str | None = None
    power: PowerModel | None = None  # None: no energy figures for this device

    @property
    def cpu_quota(self) -> tuple[float, float] | None:
        """(share of a core, CFS period in s) when this profile was measured under a CPU quota
        (`halp profile --emu-cpu-share`), else None. Its times are then a throttled core's,
        measured with ops back to back; after an idle spell such a device runs its first
        share x period of CPU at full speed (the simulator models that, `sim.engine`)."""
        share = float(self.provenance.get("cpu_share") or 1.0)
        if share >= 1.0:
            return None
        return share, float(self.provenance.get("cfs_period_us") or PROFILE_CFS_PERIOD_US) / 1e6

    def features(self, layer: LayerSpec, held: Region, out: Region) -> list[float]:
        return layer_features(layer, held, out)

    def layer_s(self, layer: LayerSpec, held: Region, out: Region) -> float:
        if layer.kind == RESHAPE or out.empty:
            return 0.0
        coef = self.coefficients.get(layer.kind)
        if coef is None and layer.kind == MERGE:  # measured before merges were a kind of their own
            coef = self.coefficients.get(ELEMENTWISE)
        if coef is None:
            raise HalpError(f"profile {self.name} has no coefficients for {layer.kind} layers")
        values = self.features(layer, held, out)
        return sum(coef.get(name, 0.0) * v for name, v in zip(FEATURES, values, strict=True))

    def to_dict(self) -> dict[str, Any]:
        data = {
            "name": self.name, "provenance": self.provenance,
            "op_overhead_s": self.op_overhead_s, "message_overhead_s": self.message_overhead_s,
            "message_s_per_byte": self.message_s_per_byte,
            "copy_s_per_byte": self.copy_s_per_byte, "held_out_mape": self.held_out_mape,
            "coefficients": self.coefficients,
        }
        if self.power is not None:
            data["power"] = self.power.to_dict()
        return data


def round_significant(value: float, digits: int = 4) -> float:
    """`value` to `digits` significant digits, as a profile keeps its numbers (0 stays 0)."""
    return float(f"{value:.{digits}g}") if value else 0.0


def layer_features(layer: LayerSpec, held: Region, out: Region) -> list[float]:
    """The regression inputs of `layer` reading `held` to produce `out`, in FEATURES order."""
    in_bytes = float(shape_bytes(layer.in_shape, held))
    out_bytes = float(shape_bytes(layer.out_shape, out))
    flops = layer.flops(out)
    weights = float(layer.weight_bytes)
    if layer.kind == LINEAR:  # some output features read only their rows of the weights
        weights *= out.rows.size / max(1, layer.out_height)
    return [1.0, flops, in_bytes, out_bytes, weights, flops / _taps(layer)]


def _taps(layer: LayerSpec) -> float:
    """Kernel positions of a layer's window (dilation does not add taps)."""
    if layer.kind in (CONV, DWCONV) and layer.macs:
        out_numel = 1
        for s in layer.out_shape:
            out_numel *= s
        return max(1.0, layer.macs / (out_numel * (layer.in_shape[0] // layer.groups)))
    return float(layer.kernel[0] * layer.kernel[1])


def profile_from_dict(data: Any, where: str) -> Profile:
    """A profile from its file's contents; `where` names the file in every refusal, with the
    key and the reason. Every number is finite and in range (PROFILE_SECONDS_RANGE,
    PROVENANCE_RANGES), so no prediction made from it overflows."""
    if not isinstance(data, dict):
        raise HalpError(f"{where}: a profile must be a mapping")
    table = data.get("coefficients")
    if not isinstance(table, dict):
        raise HalpError(f"{where}: coefficients: needs a mapping of layer kind to coefficients")
    coefficients: dict[str, dict[str, float]] = {}
    for kind, values in table.items():
        if kind not in KINDS:
            raise HalpError(f"{where}: coefficients.{str(kind)[:40]}: unknown layer kind")
        if not isinstance(values, dict):
            raise HalpError(f"{where}: coefficients.{kind}: needs a mapping of feature to seconds")
        for name in values:
            if name not in FEATURES:
                raise HalpError(f"{where}: coefficients.{kind}.{str(name)[:40]}: unknown feature; "
                                f"use {FEATURES}")
        coefficients[kind] = {name: _number(v, where, f"coefficients.{kind}.{name}",
                                            *PROFILE_SECONDS_RANGE)
                              for name, v in values.items()}
    provenance = data.get("provenance") or {}
    if not isinstance(provenance, dict):
        raise HalpError(f"{where}: provenance: needs a mapping")
    for key, (low, high) in PROVENANCE_RANGES.items():
        if provenance.get(key) is not None:
            _number(provenance[key], where, f"provenance.{key}", low, high)
    for key in PROVENANCE_PROBES:
        probe = provenance.get(key)
        if probe is not None and not isinstance(probe, dict):
            raise HalpError(f"{where}: provenance.{key}: needs a mapping of layer to seconds")
        for layer, seconds in (probe or {}).items():
            _number(seconds, where, f"provenance.{key}.{str(layer)[:40]}", *PROFILE_SECONDS_RANGE)
    held_out = data.get("held_out_mape")
    power = power_from_dict(data["power"], provenance, where) if data.get("power") is not None else None
    return Profile(
        name=str(data.get("name", Path(where).stem)),
        coefficients=coefficients,
        op_overhead_s=_number(data.get("op_overhead_s", 0.0), where, "op_overhead_s",
                              *PROFILE_SECONDS_RANGE),
        message_overhead_s=_number(data.get("message_overhead_s", 0.0), where,
                                   "message_overhead_s", *PROFILE_SECONDS_RANGE),
        message_s_per_byte=_number(data.get("message_s_per_byte", 0.0), where,
                                   "message_s_per_byte", *PROFILE_SECONDS_RANGE),
        copy_s_per_byte=_number(data.get("copy_s_per_byte", 0.0), where, "copy_s_per_byte",
                                *PROFILE_SECONDS_RANGE),
        provenance=dict(provenance),
        held_out_mape=None if held_out is None else _number(held_out, where, "held_out_mape",
                                                            0.0, MAX_PERCENT),
        path=where,
        power=power,
    )


def power_from_dict(data: Any, provenance: dict[str, Any], where: str) -> PowerModel:
    """A profile's `power:` section: every key, finite and in range (POWER_WATTS_RANGE,
    POWER_CORES_RANGE), each with its source in `provenance.power`; else one line naming the
    file and the key."""
    if not isinstance(data, dict):
        raise HalpError(f"{where}: power: needs a mapping of {', '.join(POWER_KEYS)}")
    for key in data:
        if key not in POWER_KEYS:
            raise HalpError(f"{where}: power.{str(key)[:40]}: unknown key; use {', '.join(POWER_KEYS)}")
    missing = [k for k in POWER_KEYS if k not in data]
    if missing:
        raise HalpError(f"{where}: power.{missing[0]}: required (a power model needs "
                        f"{', '.join(POWER_KEYS)})")
    watts = {k: _number(data[k], where, f"power.{k}", *POWER_WATTS_RANGE) for k in POWER_WATTS}
    cores = _number(data["cores"], where, "power.cores", *POWER_CORES_RANGE)
    if cores != int(cores):
        raise HalpError(f"{where}: power.cores: a whole number of cores, got {cores:g}")
    sources = provenance.get("power")
    for key in POWER_KEYS:
        text = sources.get(key) if isinstance(sources, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise HalpError(f"{where}: provenance.power.{key}: say where the figure comes from "
                            "(a measurement, a citation, or what is assumed)")
    return PowerModel(cores=int(cores), **watts)


def _number(value: Any, where: str, key: str, low: float, high: float) -> float:
    """`value` as a finite float from `low` to `high`, or a one-line refusal naming the file
    and the key. A number written as text ("1e-5", which YAML reads as a string) is read."""
    if isinstance(value, str) and len(value) <= MAX_QUANTITY_TEXT:
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HalpError(f"{where}: {key}: expected a number, got {shown(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise HalpError(f"{where}: {key}: {shown(value, 20)} is not a finite number")
    if number < 0 <= low:
        raise HalpError(f"{where}: {key}: must not be negative, got {number:g}")
    if not low <= number <= high:
        raise HalpError(f"{where}: {key}: must be from {low:g} to {high:g}, got {number:g}")
    return number


def profile_search_path(base: Path | None = None) -> list[Path]:
    """Where a profile name is looked up: beside the scenario, the working folder, the repo."""
    dirs = []
    if base is not None:
        dirs += [base / "profiles", base.parent / "profiles"]
    dirs += [Path.cwd() / "profiles", REPO_ROOT / "profiles"]
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def find_profile(name: str, base: Path | None = None) -> Path:
    """The file of profile `name` (a bare name, or a path to a .yaml file)."""
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
        if not path.is_absolute() and base is not None:
            path = base / path
        if path.is_file():
            return path
        reason = "is a directory, not a file" if path.is_dir() else "no such file"
        raise HalpError(f"profile file {path}: {reason}")
    if not is_safe_name(name):
        raise HalpError(f"profile {name!r}: a profile is a name ({SAFE_NAME_RULE}) or a path "
                        "to a .yaml file")
    for directory in profile_search_path(base):
        path = directory / f"{name}.yaml"
        if path.is_file():
            return path
    known = sorted({p.stem for d in profile_search_path(base) if d.is_dir() for p in d.glob("*.yaml")})
    raise HalpError(f"unknown profile {name!r}; known: {', '.join(known) or 'none'}")


def load_profile(name: str, base: Path | None = None) -> Profile:
    path = find_profile(name, base)
    return profile_from_dict(read_yaml(path, MAX_PROFILE_BYTES), str(path))
