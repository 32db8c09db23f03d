"""Profiles for devices that are not here: a measured profile scaled under a stated assumption.

`halp profile --derive-from` writes one where no measurement is possible yet (a device that
is not at hand, such as `profiles/rpi4.yaml`). It must never pass for a measurement: its file
says so at the top (`DERIVED_HEADER`) and in its provenance (`kind: derived`, the scales and
the assumption).
"""

from __future__ import annotations

from typing import Any

from halp.errors import HalpError
from halp.latency.profile import Profile, round_significant

DERIVED_HEADER = """\
# DERIVED latency profile: NOT MEASURED on the device it names. It is a measured profile scaled
# by `halp profile --derive-from` (halp.latency.profiler.derive_profile) under the assumption in
# provenance: FLOP and byte terms x compute_scale (chosen so VGG-16 takes vgg16_s_assumed),
# fixed costs (intercepts, op and message overheads) x overhead_scale, gather x copy_scale.
# Replace it with a measured one: run `halp hw profile` on the device itself.
"""


def derive_profile(base: Profile, name: str, *, compute_scale: float, overhead_scale: float,
                   copy_scale: float, provenance: dict[str, Any]) -> Profile:
    """A profile for a device that was not measured, scaled from one that was: the terms that
    grow with the work (FLOPs, bytes) by `compute_scale`, the fixed costs (per-layer
    intercepts, per-op and per-message overheads: interpreter and dispatch time) by
    `overhead_scale`, and the gather's cost per byte by `copy_scale`."""
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
                    "overhead_scale": overhead_scale, "copy_scale": copy_scale},
        held_out_mape=None,
    )
