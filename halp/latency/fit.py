"""Fitting a profile's coefficients: non-negative least squares on relative errors.

A measured op is a fused run of layers; its time is modelled as

    seconds = op_overhead_s + sum over its layers of coef[layer.kind] . features(layer)

which is linear in every coefficient at once, so all kinds and the op overhead are fitted
together from single layers and fused runs alike. Coefficients are kept non-negative (a layer
never gets faster by doing more), and each row is divided by its measured time, so the fit
minimises squared *relative* error: a 20 us elementwise op counts as much as a 20 ms
convolution. The figure of merit is the mean absolute percentage error (MAPE).

`nnls` is Lawson and Hanson's active-set algorithm (Solving Least Squares Problems, 1974,
ch. 23), in numpy only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from halp.errors import HalpError

Term = tuple[str, tuple[float, ...]]  # (layer kind, feature vector) of one layer of a run


@dataclass(frozen=True)
class Observation:
    """One measured op: the feature vectors of the layers it ran, and its measured time."""

    terms: tuple[Term, ...]
    seconds: float


@dataclass(frozen=True)
class Fit:
    coefficients: dict[str, dict[str, float]]
    op_overhead_s: float


def nnls(a: np.ndarray, b: np.ndarray, max_iter: int | None = None) -> np.ndarray:
    """The x >= 0 that minimises ||a x - b||_2 (Lawson-Hanson active set)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.ndim != 2 or b.shape != (a.shape[0],):
        raise ValueError(f"nnls needs a (m, n) matrix and an (m,) vector, got {a.shape} and {b.shape}")
    m, n = a.shape
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    scale = max(float(np.abs(a).max(initial=0.0)), 1e-300) * max(float(np.abs(b).max(initial=0.0)), 1e-300)
    tol = 10.0 * max(m, n) * np.finfo(float).eps * scale
    max_iter = 3 * n + 30 if max_iter is None else max_iter
    iterations = 0
    w = a.T @ (b - a @ x)
    while (~passive).any() and (w[~passive] > tol).any():
        candidates = np.where(~passive, w, -np.inf)
        passive[int(np.argmax(candidates))] = True
        while True:
            iterations += 1
            if iterations > max_iter:  # degenerate (rank-deficient) cycling: finish slowly
                return _coordinate_descent(a, b, x)
            s = np.zeros(n)
            s[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (s[passive] > 0).all():
                x = s
                break
            # Step from x towards s as far as feasibility allows, then drop the zeros.
            blocking = passive & (s <= 0)
            alpha = float(np.min(x[blocking] / (x[blocking] - s[blocking])))
            x = x + alpha * (s - x)
            passive &= x > tol
            x[~passive] = 0.0
            if not passive.any():
                break
        w = a.T @ (b - a @ x)
    return x


def _coordinate_descent(a: np.ndarray, b: np.ndarray, x: np.ndarray, sweeps: int = 20_000) -> np.ndarray:
    """Projected coordinate descent on ||a x - b||^2 with x >= 0: slow but convergent even where
    the active set method cycles (rank-deficient columns)."""
    x = x.copy()
    norms = (a * a).sum(axis=0)
    residual = a @ x - b
    for _ in range(sweeps):
        largest = 0.0
        for j in np.nonzero(norms > 0)[0]:
            new = max(0.0, x[j] - float(a[:, j] @ residual) / norms[j])
            if new != x[j]:
                residual += a[:, j] * (new - x[j])
                largest = max(largest, abs(new - x[j]) * np.sqrt(norms[j]))
                x[j] = new
        if largest <= 1e-13 * (1.0 + float(np.abs(b).max(initial=0.0))):
            break
    return x


def design(observations: Sequence[Observation], kinds: Sequence[str], n_features: int,
           overhead: bool) -> np.ndarray:
    """The design matrix: one block of `n_features` columns per kind, then the op overhead."""
    column = {kind: i * n_features for i, kind in enumerate(kinds)}
    a = np.zeros((len(observations), len(kinds) * n_features + int(overhead)))
    for row, obs in enumerate(observations):
        for kind, values in obs.terms:
            if len(values) != n_features:
                raise ValueError(f"a {kind} term has {len(values)} features, expected {n_features}")
            c = column[kind]
            a[row, c:c + n_features] += values
        if overhead:
            a[row, -1] = 1.0
    return a


def fit_observations(observations: Sequence[Observation], features: Sequence[str],
                     overhead: bool = True) -> Fit:
    """Per-kind coefficients (and the per-op overhead) minimising squared relative error."""
    if not observations:
        raise HalpError("no measurements to fit a profile from")
    kinds = sorted({kind for obs in observations for kind, _ in obs.terms})
    a = design(observations, kinds, len(features), overhead)
    y = np.array([obs.seconds for obs in observations])
    if (y <= 0).any():
        raise HalpError("a measured time is not positive; the timer is broken")
    a, b = a / y[:, None], np.ones_like(y)  # relative error: (pred - y) / y
    norms = np.linalg.norm(a, axis=0)
    norms[norms == 0] = 1.0
    x = nnls(a / norms, b) / norms
    coefficients = {
        kind: {name: float(x[i * len(features) + j]) for j, name in enumerate(features)}
        for i, kind in enumerate(kinds)
    }
    return Fit(coefficients, float(x[-1]) if overhead else 0.0)


def fit_coefficients(samples: Iterable[tuple[str, Sequence[float], float]],
                     features: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per-kind coefficients from single-layer samples `(kind, features, seconds)`."""
    observations = [Observation(((kind, tuple(map(float, values))),), float(seconds))
                    for kind, values, seconds in samples]
    return fit_observations(observations, features, overhead=False).coefficients


def predict(fit: Fit, terms: Iterable[Term], features: Sequence[str]) -> float:
    total = fit.op_overhead_s
    for kind, values in terms:
        coef = fit.coefficients.get(kind, {})
        total += sum(coef.get(name, 0.0) * v for name, v in zip(features, values, strict=True))
    return total


def mape(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """Mean absolute percentage error, in percent."""
    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    if len(m) == 0:
        return float("nan")
    return float(np.mean(np.abs(p - m) / m) * 100.0)
