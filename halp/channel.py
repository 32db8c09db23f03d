"""Time-variant channels: bandwidth traces generated from a seed.

- Gilbert-Elliott: a two-state Markov chain (good, bad), one transition draw per step.
- Gauss-Markov: a mean-reverting random walk, b(t+1) = a b(t) + (1 - a) mean + sqrt(1 - a^2) sigma w,
  with w standard normal, clipped below at `floor`.

Both give a piecewise-constant `BandwidthTrace` that the simulator integrates exactly and the
emulator plays back by changing the shaping rate on schedule.
"""

from __future__ import annotations

import math

import numpy as np

from halp.errors import HalpError
from halp.network import MAX_TRACE_ROWS, BandwidthTrace


def step_count(step_s: float, duration_s: float) -> int:
    """How many steps a generated trace of `duration_s` takes `step_s` at a time (at least
    one), refused before anything is drawn when it is not a positive finite step or would
    exceed MAX_TRACE_ROWS."""
    if not (math.isfinite(step_s) and math.isfinite(duration_s)) or step_s <= 0 \
            or duration_s < 0:
        raise HalpError(f"a generated trace needs a positive step and a finite duration, got "
                        f"step {step_s!r} s and duration {duration_s!r} s")
    steps = duration_s / step_s
    if steps > MAX_TRACE_ROWS:
        raise HalpError(f"duration / step is {steps:.3g} steps; at most {MAX_TRACE_ROWS}")
    return max(1, math.ceil(steps))


def gilbert_elliott(good_bps: float, bad_bps: float, p_good_bad: float, p_bad_good: float,
                    step_s: float, duration_s: float, seed: int, start_good: bool = True) -> BandwidthTrace:
    steps = step_count(step_s, duration_s)
    rng = np.random.default_rng(seed)
    good = start_good
    values = []
    for _ in range(steps):
        values.append(good_bps if good else bad_bps)
        flip = rng.random() < (p_good_bad if good else p_bad_good)
        good = not good if flip else good
    return _trace(values, step_s)


def gauss_markov(mean_bps: float, sigma_bps: float, alpha: float, step_s: float, duration_s: float,
                 seed: int, floor_bps: float) -> BandwidthTrace:
    steps = step_count(step_s, duration_s)
    rng = np.random.default_rng(seed)
    b = mean_bps
    values = []
    for _ in range(steps):
        values.append(max(floor_bps, b))
        b = alpha * b + (1 - alpha) * mean_bps + np.sqrt(1 - alpha**2) * sigma_bps * rng.standard_normal()
    return _trace(values, step_s)


def _trace(values: list[float], step_s: float) -> BandwidthTrace:
    """Merge equal neighbours so the trace only changes where the rate does."""
    times, rates = [0.0], [float(values[0])]
    for i, v in enumerate(values[1:], start=1):
        if v != rates[-1]:
            times.append(i * step_s)
            rates.append(float(v))
    return BandwidthTrace(tuple(times), tuple(rates))
