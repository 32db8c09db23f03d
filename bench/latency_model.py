"""How well a profile predicts compute ops it was not fitted on: MAPE of ops on row slices.

A fresh measurement on this machine, the way `halp profile` measures (run_region, shuffled
round-robin passes, the minimum of clean calls), of fused runs and single ops on *partial* row
slices, at heights the profile never saw (3/4, 3/8, 3/16 of each map, other random positions),
for VGG-16 and MobileNet-V1 variants, one of which (0.75_192) the shipped profile never
measured, and for the DAG models ResNet-18, MobileNet-V2 and GoogLeNet (`--models` adds
ResNet-50), whose blocks (residual blocks, inception modules) hold merges: adds and channel
concatenations. A fused run is predicted by `LatencyModel.compute_s` on a one-device cluster,
the path planners and the simulator take; an op of a block timed alone by the profile's
prediction of that op (`Profile.layer_s`) plus one op overhead.

Prints MAPE per model (fused runs), per kind of single op (merge included: a profile without
merge coefficients predicts merges with its elementwise ones), per heaviest kind of fused run,
per structure (chain runs, runs through blocks, a block alone) and per run length (conv,
dwconv and pool ops in the run, blocks opened); the last line is the overall MAPE of the
fused runs. The target is 10% or less.

    .venv/bin/python bench/latency_model.py [--profile this-machine] [--repeats 5]
                                            [--models vgg16,...,resnet50]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections import defaultdict

from halp.cluster import Cluster, Device
from halp.latency.model import LatencyModel
from halp.latency.ops import Sample, graph_of
from halp.latency.profile import load_profile
from halp.latency.timing import BackgroundLoad, measure_graphs
from halp.model.graph import MERGE, ModelGraph, region
from halp.model.zoo import ModelSpec

MODELS = {spec.variant: spec for spec in [
    ModelSpec("vgg16"), ModelSpec("mobilenet_v1", 1.0, 224), ModelSpec("mobilenet_v1", 0.75, 192),
    ModelSpec("mobilenet_v1", 0.5, 160), ModelSpec("mobilenet_v1", 0.25, 128), ModelSpec("resnet18"),
    ModelSpec("mobilenet_v2"), ModelSpec("googlenet"), ModelSpec("resnet50")]}
DEFAULT_MODELS = [name for name in MODELS if name != "resnet50"]
HEIGHTS = (3 / 4, 3 / 8, 3 / 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="this-machine", help="a profile name or a .yaml path")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=12345, help="slice positions (not the profile's)")
    parser.add_argument("--statistic", choices=("min", "median"), default="min",
                        help="as the profile was measured (see halp.latency.timing)")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help=f"comma-separated, of {', '.join(MODELS)}")
    args = parser.parse_args()
    unknown = [m for m in args.models.split(",") if m not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; known: {', '.join(MODELS)}")

    profile = load_profile(args.profile)
    latency = LatencyModel(Cluster((Device("dev", profile),), host="dev"))
    graphs = {name: graph_of(MODELS[name]) for name in args.models.split(",")}
    began = time.perf_counter()
    with BackgroundLoad() as load:
        samples = measure_graphs(list(graphs.values()), HEIGHTS, args.repeats, args.threads,
                                 seed=args.seed, statistic=args.statistic)
    took = time.perf_counter() - began
    samples = [s for s in samples if s.partial]

    rows = []
    for s in samples:
        graph = graphs[s.model]
        if s.node is None:
            predicted = latency.compute_s("dev", graph, s.start, s.stop, graph.rows(s.stop, *s.rows))
        else:
            op = graph.layers[s.start].nodes[s.node].spec
            out = region(s.rows, (0, op.out_width))
            predicted = profile.op_overhead_s + profile.layer_s(op, op.needed(out), out)
        rows.append((s, abs(predicted - s.seconds) / s.seconds * 100.0, predicted))
    fused = [r for r in rows if r[0].fused]
    singles = [r for r in rows if not r[0].fused]

    merges = "merge coefficients" if MERGE in profile.coefficients else "no merge coefficients (merges as elementwise)"
    print(f"profile {profile.path} (fitted held-out MAPE {profile.held_out_mape}%, {merges}), "
          f"{len(fused)} fused runs and {len(singles)} single ops on partial slices measured in "
          f"{took:.0f} s, other processes' CPU share {load.share}")
    table("model", fused, lambda s: s.model, "fused runs and blocks")
    table("op kind", singles, lambda s: s.kind, "single ops (a block's ops alone included)")
    table("run kind", fused, lambda s: s.kind, "fused runs and blocks, by heaviest kind")
    table("structure", fused, lambda s: structure(graphs[s.model], s), "fused runs")
    table("run length", fused, lambda s: s.segments, "fused runs: conv, dwconv and pool ops")
    worst = sorted(fused, key=lambda r: -r[1])[:5]
    print("worst:")
    for s, err, predicted in worst:
        print(f"  {s.model} layers [{s.start},{s.stop}) rows {s.rows[0]}:{s.rows[1]} of {s.height}: "
              f"measured {s.seconds * 1e3:.3f} ms, predicted {predicted * 1e3:.3f} ms ({err:.0f}%)")
    print(f"single ops MAPE: {statistics.fmean(r[1] for r in singles):.2f}%")
    print(f"held-out MAPE: {statistics.fmean(r[1] for r in fused):.2f}%")


def structure(graph: ModelGraph, s: Sample) -> str:
    """A block alone, a run through blocks, or a chain run."""
    stages = graph.layers[s.start:s.stop]
    if len(stages) == 1 and stages[0].nodes:
        return "block"
    return "with blocks" if any(layer.nodes for layer in stages) else "chain"


def table(title: str, rows, key, what: str) -> None:
    """MAPE per group, and the geometric mean of measured / predicted: a whole group off by the
    same factor means the machine ran faster or slower than when it was profiled (load from
    other processes), not that the profile's shape is wrong."""
    groups: dict = defaultdict(list)
    for s, err, predicted in rows:
        groups[key(s)].append((err, s.seconds, predicted))
    print(f"{title:<12} {'ops':>5} {'MAPE %':>7} {'max %':>6} {'median ms':>10} {'meas/pred':>10}   ({what})")
    for k in sorted(groups, key=lambda v: (isinstance(v, str), v)):
        errs = [e for e, _, _ in groups[k]]
        ms = statistics.median(t for _, t, _ in groups[k]) * 1e3
        ratio = math.exp(statistics.fmean(math.log(t / p) for _, t, p in groups[k]))
        print(f"{k!s:<12} {len(errs):>5} {statistics.fmean(errs):>7.2f} {max(errs):>6.1f} {ms:>10.3f} "
              f"{ratio:>10.3f}")


if __name__ == "__main__":
    main()
