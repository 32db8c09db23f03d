"""Profiles for devices that are not here: a measured profile scaled under a stated assumption.

`halp profile --derive-from` writes one where no measurement is possible yet (a device that
is not at hand, such as `profiles/rpi4.yaml`). It must never pass for a measurement: its file
says so at the top (`DERIVED_HEADER`) and in its provenance (`kind: derived`, the scales and
the assumption).

Every layer kind of the base is scaled alike, merges (adds, channel concatenations) included:
the assumption is one slowdown of the work terms, and VGG-16, which sets it, has no merges, so
nothing would justify scaling them apart. A base without merge coefficients (measured on chain
models only) gives a derived profile without them: its merges are predicted with its
elementwise coefficients (`Profile.layer_s`), and the provenance says so (`merge`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from halp.cluster import Cluster, Device
from halp.errors import HalpError
from halp.latency.model import LatencyModel
from halp.latency.ops import graph_of
from halp.latency.profile import Profile, round_significant
from halp.model.graph import MERGE
from halp.model.zoo import ModelSpec

DERIVED_HEADER = """\
# DERIVED latency profile: NOT MEASURED on the device it names. It is a measured profile scaled
# by `halp profile --derive-from` (halp.latency.derive.derive_profile) under the assumption in
# provenance: FLOP and byte terms x compute_scale (chosen so VGG-16 takes vgg16_s_assumed),
# fixed costs (intercepts, op and message overheads) x overhead_scale, gather x copy_scale.
# Every layer kind is scaled alike; provenance.merge says how merges (adds, concatenations) are
# predicted.
# Replace it with a measured one: run `halp hw profile` on the device itself.
"""


def derive_profile(base: Profile, name: str, *, compute_scale: float, overhead_scale: float,
                   copy_scale: float, provenance: dict[str, Any]) -> Profile:
    """A profile for a device that was not measured, scaled from one that was: the terms that
    grow with the work (FLOPs, bytes) by `compute_scale`, the fixed costs (per-layer
    intercepts, per-op and per-message overheads: interpreter and dispatch time) by
    `overhead_scale`, and the gather's cost per byte by `copy_scale`; every layer kind alike."""
    if min(compute_scale, overhead_scale, copy_scale) <= 0:
        raise HalpError("scale factors of a derived profile must be positive")
    coefficients = {
        kind: {term: round_significant(
                   value * (overhead_scale if term == "intercept_s" else compute_scale))
               for term, value in coef.items()}
        for kind, coef in base.coefficients.items()
    }
    return Profile(
        name=name, coefficients=coefficients,
        op_overhead_s=round_significant(base.op_overhead_s * overhead_scale),
        message_overhead_s=round_significant(base.message_overhead_s * overhead_scale),
        copy_s_per_byte=round_significant(base.copy_s_per_byte * copy_scale),
        provenance={"kind": "derived", "from": base.name, **provenance,
                    "compute_scale": round_significant(compute_scale),
                    "overhead_scale": overhead_scale, "copy_scale": copy_scale,
                    "merge": (f"{base.name}'s merge coefficients, scaled as every kind's"
                              if MERGE in base.coefficients else
                              f"none in {base.name}: merges are predicted with the elementwise "
                              "coefficients")},
        held_out_mape=None,
    )


def vgg16_seconds(profile: Profile) -> float:
    """One whole VGG-16 on a device of `profile`, as the latency model predicts it."""
    graph = graph_of(ModelSpec("vgg16"))
    latency = LatencyModel(Cluster((Device("d", profile),), host="d"))
    return latency.compute_s("d", graph, 0, len(graph), graph.full(len(graph)))


@dataclass(frozen=True)
class Derived:
    profile: Profile
    base_vgg16_s: float  # VGG-16 on the measured profile it was scaled from
    compute_scale: float  # what the FLOP and byte terms were multiplied by


def derive_for_vgg16(base: Profile, name: str, *, vgg16_s: float, overhead_scale: float,
                     copy_scale: float, provenance: dict[str, Any]) -> Derived:
    """`derive_profile` with the compute scale that makes VGG-16 take `vgg16_s` (a published or
    assumed time on the target) once the fixed costs are scaled by `overhead_scale`.
    `provenance` is kept in its order, with `vgg16_s_on_base` after `vgg16_s_assumed`."""
    if vgg16_s <= 0:
        raise HalpError("--derive-from needs --vgg16-s SECONDS: the target's assumed VGG-16 time")
    fixed_only = derive_profile(base, "fixed", compute_scale=1e-12, overhead_scale=1.0,
                                copy_scale=1.0, provenance={})
    fixed, total = vgg16_seconds(fixed_only), vgg16_seconds(base)
    if vgg16_s <= fixed * overhead_scale:
        raise HalpError(f"--vgg16-s {vgg16_s:g} is less than the fixed costs alone")
    compute_scale = (vgg16_s - fixed * overhead_scale) / (total - fixed)
    noted: dict[str, Any] = {}
    for key, value in provenance.items():
        noted[key] = value
        if key == "vgg16_s_assumed":
            noted["vgg16_s_on_base"] = round(total, 4)
    noted.setdefault("vgg16_s_on_base", round(total, 4))
    profile = derive_profile(base, name, compute_scale=compute_scale,
                             overhead_scale=overhead_scale, copy_scale=copy_scale,
                             provenance=noted)
    return Derived(profile, total, compute_scale)
