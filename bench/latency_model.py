"""How well a profile predicts compute ops it was not fitted on: MAPE of fused runs on slices.

A fresh measurement on this machine, the way `halp profile` measures (run_region, shuffled
round-robin passes, median of clean calls), but only of fused runs on *partial* row slices, at
heights the profile never saw (3/4, 3/8, 3/16 of each map, other random positions), for VGG-16
and MobileNet-V1 variants, one of which (0.75_192) the shipped profile never measured. Each op
is predicted by `LatencyModel.compute_s` on a one-device cluster, the path planners and the
simulator take. Prints MAPE per model, per heaviest layer kind and per run length (conv, dwconv
and pool layers in the run); the last line is the overall MAPE. The target is 10% or less.

    .venv/bin/python bench/latency_model.py [--profile this-machine] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections import defaultdict

from halp.cluster import Cluster, Device
from halp.latency.model import LatencyModel
from halp.latency.ops import graph_of
from halp.latency.profile import load_profile
from halp.latency.timing import BackgroundLoad, measure_graphs
from halp.model.zoo import ModelSpec

MODELS = [ModelSpec("vgg16"), ModelSpec("mobilenet_v1", 1.0, 224), ModelSpec("mobilenet_v1", 0.75, 192),
          ModelSpec("mobilenet_v1", 0.5, 160), ModelSpec("mobilenet_v1", 0.25, 128)]
HEIGHTS = (3 / 4, 3 / 8, 3 / 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="this-machine")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=12345, help="slice positions (not the profile's)")
    parser.add_argument("--statistic", choices=("min", "median"), default="min",
                        help="as the profile was measured (see halp.latency.timing)")
    args = parser.parse_args()

    profile = load_profile(args.profile)
    latency = LatencyModel(Cluster((Device("dev", profile),), host="dev"))
    graphs = {spec.variant: graph_of(spec) for spec in MODELS}
    began = time.perf_counter()
    with BackgroundLoad() as load:
        samples = measure_graphs(list(graphs.values()), HEIGHTS, args.repeats, args.threads,
                                 seed=args.seed, singles=False, statistic=args.statistic)
    took = time.perf_counter() - began
    samples = [s for s in samples if s.fused and s.partial]

    rows = []
    for s in samples:
        graph = graphs[s.model]
        predicted = latency.compute_s("dev", graph, s.start, s.stop, graph.rows(s.stop, *s.rows))
        rows.append((s, abs(predicted - s.seconds) / s.seconds * 100.0, predicted))

    print(f"profile {profile.path} (fitted held-out MAPE {profile.held_out_mape}%), "
          f"{len(rows)} fused runs on partial slices measured in {took:.0f} s, "
          f"other processes' CPU share {load.share}")
    table("model", rows, lambda s: s.model)
    table("kind", rows, lambda s: s.kind)
    table("run length", rows, lambda s: s.segments)
    worst = sorted(rows, key=lambda r: -r[1])[:5]
    print("worst:")
    for s, err, predicted in worst:
        print(f"  {s.model} layers [{s.start},{s.stop}) rows {s.rows[0]}:{s.rows[1]} of {s.height}: "
              f"measured {s.seconds * 1e3:.3f} ms, predicted {predicted * 1e3:.3f} ms ({err:.0f}%)")
    print(f"held-out MAPE: {statistics.fmean(r[1] for r in rows):.2f}%")


def table(title: str, rows, key) -> None:
    """MAPE per group, and the geometric mean of measured / predicted: a whole group off by the
    same factor means the machine ran faster or slower than when it was profiled (load from
    other processes), not that the profile's shape is wrong."""
    groups: dict = defaultdict(list)
    for s, err, predicted in rows:
        groups[key(s)].append((err, s.seconds, predicted))
    print(f"{title:<12} {'ops':>5} {'MAPE %':>7} {'max %':>6} {'median ms':>10} {'meas/pred':>10}")
    for k in sorted(groups, key=lambda v: (isinstance(v, str), v)):
        errs = [e for e, _, _ in groups[k]]
        ms = statistics.median(t for _, t, _ in groups[k]) * 1e3
        ratio = math.exp(statistics.fmean(math.log(t / p) for _, t, p in groups[k]))
        print(f"{k!s:<12} {len(errs):>5} {statistics.fmean(errs):>7.2f} {max(errs):>6.1f} {ms:>10.3f} "
              f"{ratio:>10.3f}")


if __name__ == "__main__":
    main()
