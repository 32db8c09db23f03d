"""`halp model NAME`: the stage table and counts of a zoo model (a block is a residual block or
an inception module: the ops between two places where a single tensor crosses)."""

from __future__ import annotations

import argparse

from halp.cli.common import print_json
from halp.model.trace import trace_model
from halp.model.zoo import MODEL_NAMES, ModelSpec, build_model


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="show a model's layers, MACs and parameters")
    p.add_argument("name", help=f"one of {', '.join(MODEL_NAMES)}")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--factory", help="module:function for a custom model")
    p.add_argument("--input-shape", type=int, nargs=3, metavar=("C", "H", "W"))
    p.add_argument("--layers", action="store_true", help="list every layer")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    shape = tuple(args.input_shape) if args.input_shape else None
    spec = ModelSpec(args.name, args.width, args.resolution, factory=args.factory, input_shape=shape)
    graph = trace_model(build_model(spec), spec.shape, spec.variant)
    summary = {"model": spec.variant, "macs": graph.macs, "flops": 2 * graph.macs,
               "params": graph.params, "layers": len(graph), "input_shape": list(spec.shape),
               "spatial_layers": graph.spatial_end}
    if args.json:
        if args.layers:
            summary["layer_table"] = graph.describe()
        print_json(summary)
        return 0
    print(f"{spec.variant}: {graph.macs / 1e6:.1f} M MACs, {graph.params / 1e6:.3f} M parameters, "
          f"{len(graph)} layers ({graph.spatial_end} row-splittable), input {spec.shape}")
    if args.layers:
        print(f"{'#':>3} {'op':<18} {'kind':<11} {'in':<16} {'out':<16} {'k/s/p':<10} {'MMACs':>9}  where")
        for layer in graph.layers:
            ksp = f"{layer.kernel[0]}/{layer.stride[0]}/{layer.padding[0]}" if layer.windowed and not layer.nodes else ""
            op = f"Block ({len(layer.nodes)} ops)" if layer.nodes else layer.op
            print(f"{layer.index:>3} {op:<18} {layer.kind:<11} {str(layer.in_shape):<16} {str(layer.out_shape):<16} "
                  f"{ksp:<10} {layer.macs / 1e6:>9.2f}  {layer.where}")
    return 0
