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

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from halp.cluster import Cluster, Device
from halp.errors import HalpError
from halp.latency.model import LatencyModel
from halp.latency.ops import graph_of
from halp.latency.profile import Profile, round_significant
from halp.model.graph import MERGE, ModelGraph
from halp.model.zoo import ModelSpec

DERIVED_HEADER = """\
# DERIVED latency profile: NOT MEASURED on the device it names. It is a measured profile scaled
# by `halp profile --derive-from` (halp.latency.derive.derive_profile) under the assumption in
# provenance: FLOP and byte terms x compute_scale (chosen so VGG-16 takes vgg16_s_assumed),
# fixed costs (intercepts, op and message overheads) x overhead_scale, gather and message bytes
# x copy_scale.
# Every layer kind is scaled alike; provenance.merge says how merges (adds, concatenations) are
# predicted.
# Replace it with a measured one: run `halp hw profile` on the device itself.
"""


def derive_profile(base: Profile, name: str, *, compute_scale: float, overhead_scale: float,
                   copy_scale: float, provenance: dict[str, Any],
                   kind_scales: Mapping[str, float] | None = None) -> Profile:
    """A profile for a device that was not measured, scaled from one that was: the terms that
    grow with the work (FLOPs, bytes) by `compute_scale` (or, for a kind in `kind_scales`, by
    its own scale), the fixed costs (per-layer intercepts, per-op and per-message overheads:
    interpreter and dispatch time) by `overhead_scale`, and the costs per byte of gathering and
    of signing a message by `copy_scale`."""
    scales = {kind: (kind_scales or {}).get(kind, compute_scale) for kind in base.coefficients}
    if min(compute_scale, overhead_scale, copy_scale, *scales.values()) <= 0:
        raise HalpError("scale factors of a derived profile must be positive")
    coefficients = {
        kind: {term: round_significant(
                   value * (overhead_scale if term == "intercept_s" else scales[kind]))
               for term, value in coef.items()}
        for kind, coef in base.coefficients.items()
    }
    scale_note: dict[str, Any] = (
        {"compute_scale_by_kind": {k: round_significant(v) for k, v in scales.items()}}
        if kind_scales is not None else {"compute_scale": round_significant(compute_scale)})
    return Profile(
        name=name, coefficients=coefficients,
        op_overhead_s=round_significant(base.op_overhead_s * overhead_scale),
        message_overhead_s=round_significant(base.message_overhead_s * overhead_scale),
        copy_s_per_byte=round_significant(base.copy_s_per_byte * copy_scale),
        message_s_per_byte=round_significant(base.message_s_per_byte * copy_scale),
        provenance={"kind": "derived", "from": base.name, **provenance,
                    **scale_note,
                    "overhead_scale": overhead_scale, "copy_scale": copy_scale,
                    "merge": (f"{base.name}'s merge coefficients, scaled as every kind's"
                              if MERGE in base.coefficients else
                              f"none in {base.name}: merges are predicted with the elementwise "
                              "coefficients")},
        held_out_mape=None,
    )


def vgg16_seconds(profile: Profile) -> float:
    """One whole VGG-16 on a device of `profile`, as the latency model predicts it."""
    return standalone_seconds(profile, ModelSpec("vgg16"))


@functools.cache
def _graph(spec: ModelSpec) -> ModelGraph:
    return graph_of(spec)


def standalone_seconds(profile: Profile, spec: ModelSpec) -> float:
    """One whole inference of `spec` on one device of `profile`, as the latency model predicts
    it: the stand-alone plan's one compute op (what the simulator times it as)."""
    graph = _graph(spec)
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


PUBLISHED_HEADER = """\
# DERIVED latency profile: NOT MEASURED on the device it names. It is a measured profile whose
# work terms (FLOPs, bytes) are scaled per group of layer kinds so that the simulator's
# stand-alone prediction of each fitted model equals its PUBLISHED stand-alone time on the
# device (`halp profile --derive-from BASE --published FILE --threads N`,
# halp.latency.derive.derive_from_published); fixed costs (intercepts, op and message
# overheads) x overhead_scale, gather and message bytes x copy_scale. provenance: every
# source, quoted, every assumption, the fitted figures and those held out, each with the
# prediction and its error.
# Replace it with a measured one: run `halp hw profile` on the device itself.
"""
PUBLISHED_KEYS = ("device", "framework", "sources", "assumptions", "overhead_scale", "copy_scale",
                  "profiles", "figures", "power")
FIGURE_KEYS = ("model", "threads", "ms", "source", "quote")


@dataclass(frozen=True)
class Figure:
    """One published stand-alone time: `model` (a zoo name) on `threads` threads, in seconds,
    from `source` (a key of the file's `sources`), with the line it was read from."""

    model: str
    threads: int
    seconds: float
    source: str
    quote: str

    @property
    def key(self) -> str:
        return f"{self.source}/{self.model}"


@dataclass(frozen=True)
class PublishedFit:
    profile: Profile
    rows: list[dict[str, Any]]  # per figure of the thread count: published, predicted, error

    def errors_pct(self, fitted: bool) -> dict[str, float]:
        return {r["figure"]: r["error_pct"] for r in self.rows if r["fitted"] == fitted}


def read_published(path: str) -> dict[str, Any]:
    """The published-figures file: its keys checked, its figures as `Figure`s."""
    from halp.model.zoo import TORCHVISION_MODELS
    from halp.yamlfile import read_yaml

    data = read_yaml(path)
    if not isinstance(data, dict):
        raise HalpError(f"{path}: a published-figures file is a mapping")
    for key in data:
        if key not in PUBLISHED_KEYS:
            raise HalpError(f"{path}: {str(key)[:40]}: unknown key; use {', '.join(PUBLISHED_KEYS)}")
    sources = data.get("sources")
    if not isinstance(sources, dict) or not sources:
        raise HalpError(f"{path}: sources: needs a mapping of source name to citation")
    figures = []
    for i, raw in enumerate(data.get("figures") or []):
        if not isinstance(raw, dict) or set(raw) != set(FIGURE_KEYS):
            raise HalpError(f"{path}: figures[{i}]: needs exactly {', '.join(FIGURE_KEYS)}")
        if raw["model"] not in ("vgg16", "mobilenet_v1", *TORCHVISION_MODELS):
            raise HalpError(f"{path}: figures[{i}].model: {str(raw['model'])[:40]!r} is not a zoo model")
        if raw["source"] not in sources:
            raise HalpError(f"{path}: figures[{i}].source: {str(raw['source'])[:40]!r} is not in sources")
        ms = raw["ms"]
        if isinstance(ms, bool) or not isinstance(ms, int | float) or not 0 < ms < 1e7:
            raise HalpError(f"{path}: figures[{i}].ms: a positive number of milliseconds")
        figures.append(Figure(str(raw["model"]), int(raw["threads"]), float(ms) / 1000,
                              str(raw["source"]), str(raw["quote"])))
    if not figures:
        raise HalpError(f"{path}: figures: none given")
    return {**data, "figures": figures}


def derive_from_published(base: Profile, name: str, published: dict[str, Any], *, threads: int,
                          provenance: dict[str, Any], where: str = "published") -> PublishedFit:
    """A profile for `threads` threads fitted to the published stand-alone times of the
    models its `profiles` entry names: one compute scale per group of layer kinds (each kind
    of `base` in exactly one group), the fixed costs x `overhead_scale`, the gather x
    `copy_scale`. The scales solve, in least squares on relative error (exactly when there
    are as many fitted figures as groups), predicted(model) = published(model), where
    predicted is `standalone_seconds` on the derived profile: linear in the scales. Every
    other figure for `threads` is held out and reported with its error."""
    import numpy as np

    entries = [p for p in published.get("profiles") or [] if p.get("threads") == threads]
    if len(entries) != 1:
        raise HalpError(f"{where}: profiles: needs one entry with threads: {threads}")
    entry = entries[0]
    groups: dict[str, list[str]] = entry.get("groups") or {}
    grouped = [k for kinds in groups.values() for k in kinds]
    if sorted(grouped) != sorted(base.coefficients):
        raise HalpError(f"{where}: profiles[threads={threads}].groups: put each of {base.name}'s "
                        f"kinds ({', '.join(base.coefficients)}) in exactly one group")
    overhead_scale = float(published.get("overhead_scale", 1.0))
    copy_scale = float(published.get("copy_scale", 1.0))
    figures = [f for f in published["figures"] if f.threads == threads]
    by_key = {f.key: f for f in figures}
    fit_keys = list(entry.get("fit") or [])
    missing = [k for k in fit_keys if k not in by_key]
    if missing or not fit_keys:
        raise HalpError(f"{where}: profiles[threads={threads}].fit: {missing or 'none'}: name "
                        "figures (source/model) of that thread count")
    if len(fit_keys) < len(groups):
        raise HalpError(f"{where}: profiles[threads={threads}]: {len(groups)} groups need at least "
                        f"as many fitted figures, got {len(fit_keys)}")

    def part(kinds: set[str], fixed: bool) -> Profile:
        coef = {kind: {t: (v if (t == "intercept_s") == fixed and (fixed or kind in kinds) else 0.0)
                       for t, v in c.items()} for kind, c in base.coefficients.items()}
        return Profile("part", coef, op_overhead_s=base.op_overhead_s if fixed else 0.0)

    fixed_part = part(set(), True)
    group_parts = [part(set(kinds), False) for kinds in groups.values()]

    def terms(figure: Figure) -> tuple[float, list[float]]:
        spec = ModelSpec(figure.model)
        return (standalone_seconds(fixed_part, spec),
                [standalone_seconds(p, spec) for p in group_parts])

    fitted = [by_key[k] for k in fit_keys]
    rows_a, rows_b = [], []
    for figure in fitted:
        fixed, work = terms(figure)
        rows_a.append([w / figure.seconds for w in work])
        rows_b.append((figure.seconds - overhead_scale * fixed) / figure.seconds)
    solution = np.linalg.lstsq(np.array(rows_a), np.array(rows_b), rcond=None)[0]
    scales = dict(zip(groups, (float(s) for s in solution), strict=True))
    for group, scale in scales.items():
        if not scale > 0:
            raise HalpError(f"{where}: profiles[threads={threads}]: the fit gives group {group} a "
                            f"scale of {scale:.3g}: the figures do not separate the groups; merge them")
    kind_scales = {kind: scales[group] for group, kinds in groups.items() for kind in kinds}
    draft = derive_profile(base, name, compute_scale=1.0, overhead_scale=overhead_scale,
                           copy_scale=copy_scale, provenance={}, kind_scales=kind_scales)
    rows = []
    for figure in figures:
        predicted = standalone_seconds(draft, ModelSpec(figure.model))
        rows.append({"figure": figure.key, "model": figure.model, "source": figure.source,
                     "fitted": figure.key in fit_keys, "published_s": round(figure.seconds, 5),
                     "predicted_s": round(predicted, 5),
                     "error_pct": round(100 * (predicted - figure.seconds) / figure.seconds, 1)})
    noted = {
        **provenance, "device": published.get("device"), "threads": threads,
        "framework": published.get("framework"), "sources": published["sources"],
        "assumptions": published.get("assumptions"),
        "groups": {g: list(k) for g, k in groups.items()},
        "compute_scale_by_group": {g: round_significant(s) for g, s in scales.items()},
        "fitted": [_figure_note(r, by_key) for r in rows if r["fitted"]],
        "held_out": [_figure_note(r, by_key) for r in rows if not r["fitted"]],
    }
    profile = derive_profile(base, name, compute_scale=1.0, overhead_scale=overhead_scale,
                             copy_scale=copy_scale, provenance=noted, kind_scales=kind_scales)
    return PublishedFit(profile, rows)


def _figure_note(row: dict[str, Any], by_key: dict[str, Figure]) -> dict[str, Any]:
    figure = by_key[row["figure"]]
    return {"model": row["model"], "source": row["source"], "quote": figure.quote,
            "published_s": row["published_s"], "predicted_s": row["predicted_s"],
            "error_pct": row["error_pct"]}
