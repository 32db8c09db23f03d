"""A device profile fitted from timed ops, and how well it predicts ops it was not fitted on.

`halp.latency.fit` is the regression alone: observations in, coefficients out, knowing nothing
of models or profiles. This module makes a `Profile` of the profiler's `Sample`s with it: it
holds out a random share of the fused runs (by seed), fits the rest, and reports the MAPE of
the held-out runs' predictions as `held_out_mape`, and in the provenance by layer kind and by
run length.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from halp.latency.fit import Fit, fit_observations, mape, predict
from halp.latency.ops import Sample
from halp.latency.profile import FEATURES, Profile, round_significant


@dataclass(frozen=True)
class FitReport:
    """A fit of a profile's coefficients, the samples it was fitted on, and those held out."""

    fit: Fit
    train: list[Sample]
    held_out: list[Sample]

    def errors(self, samples: Sequence[Sample]) -> list[float]:
        return [abs(predict(self.fit, s.terms, FEATURES) - s.seconds) / s.seconds * 100.0
                for s in samples]

    @property
    def held_out_mape(self) -> float | None:
        if not self.held_out:
            return None
        return mape([predict(self.fit, s.terms, FEATURES) for s in self.held_out],
                    [s.seconds for s in self.held_out])


def split(samples: Sequence[Sample], holdout: float,
          seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold out a random share `holdout` of the fused runs (by seed); singles always train."""
    fused = [i for i, s in enumerate(samples) if s.fused]
    rng = random.Random(seed)
    held = set(rng.sample(fused, int(round(holdout * len(fused))))) if fused else set()
    return ([s for i, s in enumerate(samples) if i not in held],
            [s for i, s in enumerate(samples) if i in held])


def fit_samples(samples: Sequence[Sample], holdout: float = 0.25, seed: int = 0) -> FitReport:
    train, held_out = split(samples, holdout, seed)
    fit = fit_observations([s.observation() for s in train], FEATURES, overhead=True)
    return FitReport(fit, train, held_out)


def fit_profile(samples: Sequence[Sample], name: str, *, holdout: float = 0.25, seed: int = 0,
                copy_s_per_byte: float = 0.0, message_overhead_s: float = 0.0,
                message_s_per_byte: float = 0.0,
                provenance: dict[str, Any] | None = None) -> Profile:
    """A profile fitted on `samples`, with the MAPE of the held-out fused runs."""
    report = fit_samples(samples, holdout, seed)
    held = report.held_out_mape
    coefficients = {kind: {k: round_significant(v) for k, v in coef.items() if v > 0}
                    for kind, coef in sorted(report.fit.coefficients.items())}
    prov = dict(provenance or {})
    prov.setdefault("samples", len(report.train) + len(report.held_out))
    prov["held_out"] = {
        "ops": len(report.held_out), "share_of_fused_runs": holdout, "seed": seed,
        "mape_by_kind": _mape_by(report, lambda s: s.kind),
        "mape_by_run_length": _mape_by(report, lambda s: s.segments),
    }
    return Profile(
        name=name, coefficients=coefficients,
        op_overhead_s=round_significant(report.fit.op_overhead_s),
        message_overhead_s=round_significant(message_overhead_s),
        message_s_per_byte=round_significant(message_s_per_byte),
        copy_s_per_byte=round_significant(copy_s_per_byte),
        provenance=prov, held_out_mape=None if held is None else round(held, 2),
    )


def _mape_by(report: FitReport, key: Callable[[Sample], Any]) -> dict[Any, float]:
    groups: dict[Any, list[float]] = {}
    for s, err in zip(report.held_out, report.errors(report.held_out), strict=True):
        groups.setdefault(key(s), []).append(err)
    return {k: round(statistics.fmean(v), 2) for k, v in sorted(groups.items())}
