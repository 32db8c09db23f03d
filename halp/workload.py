"""Request arrival times from a scenario's workload, drawn from its seed."""

from __future__ import annotations

import numpy as np

from halp.scenario import WorkloadConfig


def arrival_times(workload: WorkloadConfig, seed: int) -> list[float]:
    """Seconds from the start of the run at which each request's input exists on the host."""
    n = workload.requests
    if workload.arrival == "single":
        return [0.0]
    if workload.arrival == "periodic":
        assert workload.interval is not None
        return [i * workload.interval for i in range(n)]
    assert workload.rate is not None
    gaps = np.random.default_rng(seed).exponential(1.0 / workload.rate, size=n)
    gaps[0] = 0.0
    return [float(t) for t in np.cumsum(gaps)]
