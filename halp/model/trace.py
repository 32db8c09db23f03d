"""Trace a PyTorch module into a `ModelGraph`: what its `forward` really does, cut into stages.

`torch.fx` records the ops of `forward` (a subclass of `nn.Sequential` with its own `forward`
is traced like any module, never read as a list of children); fake tensors give every op its
shape without computing anything. Each op becomes a `LayerSpec` with its row arithmetic and a
runner (`halp.model.slicing`). The model is then cut wherever a single tensor crosses (between
residual blocks, between inception modules): the pieces are the stages a plan's `Compute`
names, one op or a block of them.

An op that cannot run on a row slice, or a module `torch.fx` cannot trace, is refused in one
line naming where it is in the module, the op, and what to do.
"""

from __future__ import annotations

import linecache
import logging
import operator
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.fx
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode  # no public path to shapes alone

from halp.errors import ModelError
from halp.model.graph import (
    BLOCK,
    BYTES_PER_ELEMENT,
    CONV,
    DWCONV,
    ELEMENTWISE,
    LINEAR,
    MERGE,
    POOL,
    RESHAPE,
    LayerSpec,
    ModelGraph,
    Node,
)
from halp.model.slicing import Runner, linear, row_local, whole_map, windowed

SHAPE = "halp_shape"  # where `_Shapes` leaves a node's output shape (with the batch dimension)
# Modules and functions that act on each element alone (shape kept).
ELEMENTWISE_MODULES = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish, nn.Hardsigmoid,
                       nn.Sigmoid, nn.Tanh, nn.Dropout, nn.Dropout2d, nn.Identity, nn.SiLU, nn.GELU,
                       nn.ELU, nn.Hardtanh, nn.Mish, nn.PReLU)
ELEMENTWISE_FUNCTIONS = {"relu", "relu6", "sigmoid", "tanh", "hardswish", "hardsigmoid", "silu", "gelu",
                         "leaky_relu", "elu", "dropout", "hardtanh", "clamp", "mish", "neg", "abs"}
MERGE_FUNCTIONS = {"add", "sub", "mul", "truediv", "div", "iadd", "imul", "isub", "maximum", "minimum"}
SUPPORTED_MODULES = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
                     nn.ChannelShuffle, nn.Flatten, nn.Linear, nn.ZeroPad2d, nn.ConstantPad2d,
                     *ELEMENTWISE_MODULES)
SUPPORTED = ("Conv2d (any kernel, stride, padding, dilation, groups), Max/AvgPool2d, "
             "adaptive and mean pooling at the end, BatchNorm2d and activations, adds and "
             "channel concatenations, channel shuffles, splits and slices, symmetric constant "
             "padding, Flatten, Linear")


@dataclass
class _Op:
    """One traced op: its spec, the names of the values it reads, how it runs."""

    spec: LayerSpec
    inputs: tuple[str, ...]
    runner: Runner


def trace_model(module: nn.Module, input_shape: tuple[int, int, int], name: str = "model") -> ModelGraph:
    """The `ModelGraph` of `module` taking inputs of `input_shape` (C, H, W)."""
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ModelError(f"{name}: input_shape must be [C, H, W] of positive sizes, got {list(input_shape)}")
    for sub in module.modules():  # an in-place op on a cropped view would write into its neighbours
        if getattr(sub, "inplace", False) is True:
            sub.inplace = False  # type: ignore[assignment]
    traced = _trace(module, name)
    _check_modules(traced, name)
    _shapes(traced, input_shape, name)
    _check_in_place(traced, name)
    ops, output = _ops(traced, name)
    layers = _stages(ops, output, tuple(input_shape), name)
    runners = {op.spec.name: op.runner for op in ops}
    return ModelGraph(name=name, input_shape=tuple(input_shape), layers=layers, runners=runners)  # type: ignore[arg-type]


# ---- tracing ------------------------------------------------------------------------------
class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer, for this thread only. While it traces, fx patches `nn.Module.__call__`
    and `__getattr__` for every thread of the process; a worker computing a request (or a test
    running a model) in another thread would then meet this tracer, which refuses modules not
    in its root. Calls from other threads run as if nothing were traced."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
        if threading.get_ident() != self.thread:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        if threading.get_ident() != self.thread:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)


def _trace(module: nn.Module, name: str) -> torch.fx.GraphModule:
    try:
        graph = _Tracer().trace(module)
    except Exception as exc:  # the user's forward: whatever it raises is one line
        raise ModelError(f"{name}: {_failing_code(module, exc)}torch.fx cannot trace the model's "
                         f"forward: {_first_line(exc)}; write forward without control flow that "
                         "depends on tensor values (see torch.fx's limitations)") from None
    return torch.fx.GraphModule(module, graph)


def _failing_code(module: nn.Module, exc: BaseException) -> str:
    """Where tracing failed: the innermost frame of the traceback that runs code of one of the
    model's modules (not torch's calling machinery), as "path (Class, line N: source): "."""
    paths = {id(m): path for path, m in module.named_modules()}
    found = ""
    tb = exc.__traceback__
    while tb is not None:
        frame, code = tb.tb_frame, tb.tb_frame.f_code
        owner = frame.f_locals.get(code.co_varnames[0]) if code.co_argcount else None  # `self`
        if id(owner) in paths and code.co_filename != nn.modules.module.__file__:
            source = linecache.getline(code.co_filename, tb.tb_lineno).strip()
            found = (f"{paths[id(owner)] or 'forward'} ({type(owner).__name__}, line {tb.tb_lineno}"
                     f"{': ' + source if source else ''}): ")
        tb = tb.tb_next
    return found


def _check_modules(traced: torch.fx.GraphModule, name: str) -> None:
    """Refuse a layer the testbed cannot split before running anything through it."""
    for node in traced.graph.nodes:
        if node.op == "call_module":
            module = traced.get_submodule(str(node.target))
            if not isinstance(module, SUPPORTED_MODULES):
                raise ModelError(f"{name}: {node.target} ({type(module).__name__}): this layer cannot "
                                 f"be split by rows; supported: {SUPPORTED}")


IN_PLACE_OPERATORS = (operator.iadd, operator.isub, operator.imul, operator.itruediv)


def _check_in_place(traced: torch.fx.GraphModule, name: str) -> None:
    """Refuse an op that changes a map in place which forward reads again afterwards: the
    traced graph records the op but not the change (`x.relu_()` alone, then `x + y`), so those
    later reads would run on the unchanged map."""
    order = {node: i for i, node in enumerate(traced.graph.nodes)}
    for node in traced.graph.nodes:
        changed = node.args[0] if node.args else None
        if not isinstance(changed, torch.fx.Node) or _shape(changed) is None or not _in_place(node):
            continue
        later = [user for user in changed.users if order[user] > order[node]]
        if later:
            reader = "the output" if later[0].op == "output" else _where(later[0])
            raise ModelError(f"{name}: {_where(node)} ({_called(node)}): changes a map in place that "
                             f"{reader} reads afterwards, which the traced graph cannot see; use "
                             "the result instead (x = x.relu(), not x.relu_())")


def _in_place(node: torch.fx.Node) -> bool:
    """`x.relu_()`, `torch.relu_(x)`, `F.relu(x, inplace=True)`, `x += y`."""
    if node.op not in ("call_method", "call_function"):
        return False
    if node.kwargs.get("inplace") is True or node.target in IN_PLACE_OPERATORS:
        return True
    called = _called(node)
    return called.endswith("_") and not called.startswith("__")


def _called(node: torch.fx.Node) -> str:
    """The method or function a node calls, as written (`relu_`, `iadd`)."""
    return str(node.target) if node.op == "call_method" else getattr(node.target, "__name__", str(node.target))


class _Shapes(torch.fx.Interpreter):
    """Runs the traced module on fake tensors (shapes only, no arithmetic) and records each
    op's output shapes; names the op that fails."""

    def __init__(self, module: torch.fx.GraphModule):
        super().__init__(module)
        self.running: torch.fx.Node | None = None

    def run_node(self, n: torch.fx.Node) -> Any:
        self.running = n
        result = super().run_node(n)
        if isinstance(result, torch.Tensor):
            n.meta[SHAPE] = tuple(result.shape)
        elif isinstance(result, tuple | list) and result and all(isinstance(r, torch.Tensor) for r in result):
            n.meta[SHAPE] = tuple(tuple(r.shape) for r in result)
        return result


def warm_up() -> None:
    """Pay torch's first use of fake tensors (most of a second) now rather than in the first
    trace: a worker does it before it says it listens."""
    with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
        torch.nn.functional.conv2d(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3))


def _shapes(traced: torch.fx.GraphModule, input_shape: tuple[int, ...], name: str) -> None:
    """Every op's output shape, from running the module on a fake input."""
    quiet = logging.getLogger("torch._subclasses.fake_tensor")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # it logs every failing op with a traceback
    shapes = _Shapes(traced)
    try:
        with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
            shapes.run(torch.zeros((1, *input_shape)))
    except Exception as exc:  # the user's forward: whatever it raises is one line
        text = _first_line(exc)
        n = shapes.running
        where = f"{name}: {_where(n)} ({_op_name(n)})" if n is not None else name
        if "too small" in text or "greater than actual input size" in text:
            raise ModelError(f"{where}: the input {list(input_shape)} is too small for it ({text})") from None
        raise ModelError(f"{where} fails on an input of shape {list(input_shape)}: {text}") from None
    finally:
        quiet.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _shape(node: torch.fx.Node) -> tuple[int, ...] | None:
    """The shape of a node's tensor without the batch dimension, None for other values."""
    shape = node.meta.get(SHAPE)
    if shape is None or (shape and isinstance(shape[0], tuple)):
        return None
    return tuple(int(s) for s in shape[1:])


def _where(node: torch.fx.Node) -> str:
    """The module path of a node, for messages: the module called, or the module whose
    forward calls the function."""
    if node.op == "call_module":
        return str(node.target)
    stack = list(node.meta.get("nn_module_stack", {}).keys())
    owner = str(stack[-1]) if stack else ""
    return f"{owner}.{node.name}" if owner else node.name


def _op_name(node: torch.fx.Node) -> str:
    if node.op == "call_method":
        return str(node.target).rstrip("_")
    return getattr(node.target, "__name__", str(node.target)).rstrip("_")


# ---- one op at a time ---------------------------------------------------------------------
def _ops(traced: torch.fx.GraphModule, name: str) -> tuple[list[_Op], str]:
    """The ops of the traced graph in order, and the name of the value the model returns."""
    ops: list[_Op] = []
    splits: dict[str, tuple[str, list[tuple[int, int]]]] = {}  # chunk/split: source, channel ranges
    shapes: dict[str, tuple[int, ...]] = {}
    placeholder = None
    output = None
    for node in traced.graph.nodes:
        where = f"{name}: {_where(node)}"

        if node.op == "placeholder":
            if placeholder is not None:
                raise ModelError(f"{where}: forward takes more than one input; the testbed feeds one image")
            placeholder = node.name
            shapes[node.name] = _shape(node) or ()
            continue
        if node.op == "output":
            result = node.args[0]
            if not isinstance(result, torch.fx.Node) or result.name not in shapes:
                raise ModelError(f"{name}: forward must return one tensor, not {type(result).__name__}")
            output = result.name
            continue
        if node.op == "get_attr":
            raise ModelError(f"{where}: forward reads the tensor {node.target} directly; only "
                             "modules' own weights can be split by rows (wrap it in a module)")
        op = _op_name(node)
        out = _shape(node)
        if op in ("chunk", "split") and node.args and getattr(node.args[0], "name", None) in shapes:
            splits[node.name] = _split(node, shapes, where)
            continue
        if node.op == "call_function" and node.target is operator.getitem:
            source = node.args[0]
            if isinstance(source, torch.fx.Node) and source.name in shapes and _channel_slice(node) is None:
                raise ModelError(f"{where} (getitem): indexes a feature map other than by channels "
                                 "(x[:, a:b]); rows and columns cannot be indexed when split by rows")
            if getattr(source, "name", None) in splits and not isinstance(node.args[1], int):
                raise ModelError(f"{where} (getitem): indexes a split with {node.args[1]!r}; use an integer")
        if out is None:
            continue  # a size or a number made from sizes: reshapes read their traced shapes
        made = _describe(traced, node, op, shapes, splits, out, where)
        shapes[node.name] = out
        ops.append(made)
    assert placeholder is not None and output is not None
    return _live(ops, output), output


def _split(node: torch.fx.Node, shapes: dict[str, tuple[int, ...]], where: str) -> tuple[str, list[tuple[int, int]]]:
    source = node.args[0]
    dim = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else 0)
    if not isinstance(source, torch.fx.Node) or source.name not in shapes:
        raise ModelError(f"{where} ({_op_name(node)}): splits something that is not a feature map")
    rank = len(shapes[source.name]) + 1
    if not isinstance(dim, int) or dim % rank != 1 or rank != 4:
        raise ModelError(f"{where} ({_op_name(node)}): only a split along channels (dim=1) can be "
                         f"split by rows, got dim={dim!r}")
    ranges, at = [], 0
    for shape in node.meta.get(SHAPE) or ():
        channels = int(shape[1])
        ranges.append((at, at + channels))
        at += channels
    return source.name, ranges


def _inputs(node: torch.fx.Node, shapes: dict[str, tuple[int, ...]]) -> list[torch.fx.Node]:
    """The feature maps a node reads, in argument order."""
    found: list[torch.fx.Node] = []
    torch.fx.node.map_arg((node.args, node.kwargs),
                          lambda n: found.append(n) if n.name in shapes else None)  # type: ignore[func-returns-value]
    return found


def _describe(traced: torch.fx.GraphModule, node: torch.fx.Node, op: str,
              shapes: dict[str, tuple[int, ...]], splits: dict[str, tuple[str, list[tuple[int, int]]]],
              out: tuple[int, ...], where: str) -> _Op:
    channels = _channel_slice(node) if node.op == "call_function" and node.target is operator.getitem else None
    if channels is not None:  # x[:, a:b]: some channels, every row
        origin = str(getattr(node.args[0], "name", ""))
        spec = _spec(node, "slice", RESHAPE, shapes[origin], out)
        return _Op(spec, (origin,), row_local(spec, lambda x, c=channels: x[:, c]))
    if node.op == "call_function" and node.target is operator.getitem:
        origin, ranges = splits[str(getattr(node.args[0], "name", ""))]
        index = node.args[1]
        assert isinstance(index, int)  # _ops refused others
        c0, c1 = ranges[index]
        spec = _spec(node, "split", RESHAPE, shapes[origin], out)
        return _Op(spec, (origin,), row_local(spec, lambda x, a=c0, b=c1: x[:, a:b]))
    inputs = _inputs(node, shapes)
    if not inputs:
        raise ModelError(f"{where} ({op}): makes a tensor that does not come from the input; "
                         f"supported: {SUPPORTED}")
    names = tuple(n.name for n in inputs)
    first = shapes[inputs[0].name]
    if node.op == "call_module":
        module = traced.get_submodule(str(node.target))
        return _module_op(node, module, first, out, names, where)
    if op in ("max_pool2d", "avg_pool2d"):
        return _functional_pool(node, op, first, out, names, where)
    if op == "pad":
        pads, mode, value = _argument(node, 1, "pad", ()), _argument(node, 2, "mode", "constant"), \
            _argument(node, 3, "value", None)
        if mode != "constant":
            raise ModelError(f"{where} (pad): mode {mode!r} cannot be split by rows (constant only)")
        return _padding(node, op, first, out, names, where, pads, float(value or 0.0))
    if op in ("view", "reshape", "flatten"):  # run by their traced shapes: sizes are not read
        return _reshape(node, op, first, out, names, None, where)
    call = _caller(node, inputs, where)
    spatial_in = len(first) == 3
    if op in ELEMENTWISE_FUNCTIONS and len(inputs) == 1 and first == out:
        spec = _spec(node, op, ELEMENTWISE, first, out)
        return _Op(spec, names, row_local(spec, call))
    if op in ("contiguous", "clone"):
        spec = _spec(node, op, RESHAPE if op == "contiguous" else ELEMENTWISE, first, out)
        return _Op(spec, names, row_local(spec, call))
    if op in MERGE_FUNCTIONS:
        if any(shapes[n.name] != out for n in inputs):
            raise ModelError(f"{where} ({op}): combines maps of shapes "
                             f"{' and '.join(str(list(shapes[n.name])) for n in inputs)}; a per-channel "
                             "scale from a global pooling inside a block (squeeze-and-excitation) "
                             "cannot be split by rows")
        if len(inputs) == 1:
            spec = _spec(node, op, ELEMENTWISE, first, out)
        else:
            spec = _spec(node, op, MERGE, (first[0] * len(inputs), *first[1:]) if spatial_in else first, out)
        return _Op(spec, names, row_local(spec, call))
    if op in ("cat", "concat", "concatenate"):
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        if not spatial_in or not isinstance(dim, int) or dim % 4 != 1:
            raise ModelError(f"{where} ({op}): only a concatenation of maps along channels "
                             f"(dim=1) can be split by rows, got dim={dim!r}")
        spec = _spec(node, op, MERGE, out, out)
        return _Op(spec, names, row_local(spec, call))
    if op in ("channel_shuffle", "native_channel_shuffle"):
        spec = _spec(node, op, RESHAPE, first, out)
        return _Op(spec, names, row_local(spec, call))
    if op in ("transpose", "permute"):
        return _reshape(node, op, first, out, names, call, where)
    if op in ("adaptive_avg_pool2d", "adaptive_max_pool2d", "mean", "amax"):
        return _global_pool(node, op, first, out, names, call, where)
    raise ModelError(f"{where} ({op}): this op cannot be split by rows; supported: {SUPPORTED}")


def _caller(node: torch.fx.Node, inputs: list[torch.fx.Node], where: str) -> Callable[..., torch.Tensor]:
    """Call a function or method node on given tensors, its other arguments as traced; never
    in place (an in-place op on a cropped view would write into its neighbours)."""
    position = {n: i for i, n in enumerate(inputs)}

    def bad(n: torch.fx.Node) -> Any:
        if n not in position:
            raise ModelError(f"{where} ({_op_name(node)}): takes a value computed from a map's size; "
                             "only reshapes may (use fixed arguments)")
        return n

    torch.fx.node.map_arg((node.args, node.kwargs), bad)
    kwargs = {k: v for k, v in node.kwargs.items() if k != "inplace"}
    if "inplace" in node.kwargs:
        kwargs["inplace"] = False
    if node.op == "call_method":
        method = str(node.target).rstrip("_") if str(node.target).endswith("_") \
            and not str(node.target).startswith("__") else str(node.target)

        def call_method(*tensors: torch.Tensor) -> torch.Tensor:
            args = torch.fx.node.map_arg(node.args, lambda n: tensors[position[n]])  # type: ignore[arg-type,return-value]
            return getattr(args[0], method)(*args[1:], **torch.fx.node.map_arg(kwargs, lambda n: tensors[position[n]]))  # type: ignore[arg-type,return-value,index]

        return call_method
    target: Any = node.target
    if target in (operator.iadd, operator.imul, operator.isub):
        target = {operator.iadd: operator.add, operator.imul: operator.mul, operator.isub: operator.sub}[target]
    elif getattr(target, "__name__", "").endswith("_") and hasattr(torch, target.__name__.rstrip("_")):
        target = getattr(torch, target.__name__.rstrip("_"))

    def call_function(*tensors: torch.Tensor) -> torch.Tensor:
        args = torch.fx.node.map_arg(node.args, lambda n: tensors[position[n]])  # type: ignore[arg-type,return-value]
        return target(*args, **torch.fx.node.map_arg(kwargs, lambda n: tensors[position[n]]))  # type: ignore[arg-type,return-value]

    return call_function


def _spec(node: torch.fx.Node, op: str, kind: str, in_shape: tuple[int, ...], out: tuple[int, ...],
          spatial: bool = True, **rest: Any) -> LayerSpec:
    module = str(node.target) if node.op == "call_module" else ""
    return LayerSpec(index=0, op=op, kind=kind, in_shape=in_shape, out_shape=out, spatial=spatial,
                     name=node.name, where=_where(node), module=module, **rest)


def _pair(value: object) -> tuple[int, int]:
    if isinstance(value, tuple | list):
        if len(value) == 1:
            return int(value[0]), int(value[0])
        return int(value[0]), int(value[1])
    return int(value), int(value)  # type: ignore[call-overload]


def _module_op(node: torch.fx.Node, m: nn.Module, shape: tuple[int, ...], out: tuple[int, ...],
               names: tuple[str, ...], where: str) -> _Op:
    op = type(m).__name__
    where = f"{where} ({op})"
    params = sum(p.numel() for p in m.parameters())
    if isinstance(m, nn.Conv2d):
        if len(shape) != 3:
            raise ModelError(f"{where}: needs a C x H x W input, gets shape {shape}")
        if m.padding_mode != "zeros":
            raise ModelError(f"{where}: padding_mode {m.padding_mode!r} cannot be split by rows "
                             "(zeros only)")
        kh, kw = _pair(m.kernel_size)
        dh, dw = _pair(m.dilation)
        ekh, ekw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        if isinstance(m.padding, str):
            if m.padding == "valid":
                ph, pw = 0, 0
            elif ekh % 2 == 1 and ekw % 2 == 1:  # "same" with stride 1 and an odd kernel
                ph, pw = ekh // 2, ekw // 2
            else:
                raise ModelError(f"{where}: padding='same' with an even kernel is asymmetric; give numbers")
        else:
            ph, pw = _pair(m.padding)
        depthwise = m.groups > 1 and m.groups == m.in_channels
        macs = out[0] * out[1] * out[2] * (shape[0] // m.groups) * kh * kw
        spec = _spec(node, op, DWCONV if depthwise else CONV, shape, out, kernel=(ekh, ekw),
                     stride=_pair(m.stride), padding=(ph, pw), groups=m.groups, macs=macs, params=params, weight_bytes=params * BYTES_PER_ELEMENT)
        return _Op(spec, names, windowed(spec, m))
    if isinstance(m, nn.MaxPool2d | nn.AvgPool2d):
        if isinstance(m, nn.MaxPool2d) and (_pair(m.dilation) != (1, 1) or m.return_indices):
            raise ModelError(f"{where}: dilated pooling or pooling that returns indices cannot be "
                             "split by rows")
        if isinstance(m, nn.AvgPool2d) and m.divisor_override is not None:
            raise ModelError(f"{where}: divisor_override cannot be split by rows")
        count_pad = m.count_include_pad if isinstance(m, nn.AvgPool2d) else True
        return _pool(node, op, shape, out, names, where, m.kernel_size, m.stride, m.padding,
                     m.ceil_mode, count_pad)
    if isinstance(m, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
        return _global_pool(node, op, shape, out, names, m, where)
    if isinstance(m, ELEMENTWISE_MODULES):
        if isinstance(m, nn.BatchNorm2d) and (len(shape) != 3 or shape[0] != m.num_features):
            raise ModelError(f"{where}: expects {m.num_features} channels, gets shape {shape}")
        if isinstance(m, nn.PReLU) and m.num_parameters > 1 and len(shape) != 3:
            raise ModelError(f"{where}: a per-channel PReLU needs a C x H x W input")
        spec = _spec(node, op, ELEMENTWISE, shape, out, params=params, weight_bytes=params * BYTES_PER_ELEMENT)
        return _Op(spec, names, row_local(spec, m))
    if isinstance(m, nn.ZeroPad2d | nn.ConstantPad2d):
        return _padding(node, op, shape, out, names, where, m.padding, float(getattr(m, "value", 0.0)))
    if isinstance(m, nn.ChannelShuffle):
        spec = _spec(node, op, RESHAPE, shape, out)
        return _Op(spec, names, row_local(spec, m))
    if isinstance(m, nn.Flatten):
        if len(shape) == 1:
            spec = _spec(node, op, RESHAPE, shape, out)
            return _Op(spec, names, row_local(spec, m))
        if m.start_dim != 1 or m.end_dim != -1:
            raise ModelError(f"{where}: only Flatten(start_dim=1) is supported")
        spec = _spec(node, op, RESHAPE, shape, out, spatial=False)
        return _Op(spec, names, whole_map(spec, m))
    if isinstance(m, nn.Linear):
        if len(shape) != 1:
            raise ModelError(f"{where}: expects {m.in_features} features, gets shape {shape} "
                             "(add an nn.Flatten before it)")
        spec = _spec(node, op, LINEAR, shape, out, spatial=False, macs=m.in_features * m.out_features,
                     params=params, weight_bytes=params * BYTES_PER_ELEMENT)
        return _Op(spec, names, linear(spec, m))
    raise ModelError(f"{where}: this layer cannot be split by rows; supported: {SUPPORTED}")


def _channel_slice(node: torch.fx.Node) -> slice | None:
    """The channels of `x[:, a:b]` (also `x[:, a:b, :, :]`, `x[:, a:b, ...]`), None for any
    other index."""
    index = node.args[1]
    if not isinstance(index, tuple) or len(index) < 2 or index[0] != slice(None):
        return None
    channels, rest = index[1], index[2:]
    if not isinstance(channels, slice) or channels.step not in (None, 1):
        return None
    if not all(part == slice(None) or part is Ellipsis for part in rest):
        return None
    if not all(isinstance(v, int | None) for v in (channels.start, channels.stop)):
        return None
    return channels


def _padding(node: torch.fx.Node, op: str, shape: tuple[int, ...], out: tuple[int, ...],
             names: tuple[str, ...], where: str, pads: Any, value: float) -> _Op:
    """Padding the same on both sides of rows and of columns is a window of one row with that
    padding: the runner pads at the map's true border only."""
    where = f"{where} ({op})"
    pads = (pads,) * 4 if isinstance(pads, int) else tuple(pads)
    if len(shape) != 3 or len(pads) != 4 or pads[0] != pads[1] or pads[2] != pads[3] or min(pads) < 0:
        raise ModelError(f"{where}: only the same padding on both sides of rows and of columns "
                         f"(left = right, top = bottom) of a C x H x W map can be split by rows, got {list(pads)}")
    spec = _spec(node, op, RESHAPE, shape, out, padding=(int(pads[2]), int(pads[0])), pad_value=value)
    return _Op(spec, names, windowed(spec))


def _argument(node: torch.fx.Node, position: int, keyword: str, default: Any) -> Any:
    if keyword in node.kwargs:
        return node.kwargs[keyword]
    return node.args[position] if len(node.args) > position else default


def _functional_pool(node: torch.fx.Node, op: str, shape: tuple[int, ...], out: tuple[int, ...],
                     names: tuple[str, ...], where: str) -> _Op:
    kernel = _argument(node, 1, "kernel_size", None)
    stride = _argument(node, 2, "stride", None) or kernel
    padding = _argument(node, 3, "padding", 0)
    where = f"{where} ({op})"
    if op == "max_pool2d":
        if _pair(_argument(node, 4, "dilation", 1)) != (1, 1) or _argument(node, 6, "return_indices", False):
            raise ModelError(f"{where}: dilated pooling or pooling that returns indices cannot be "
                             "split by rows")
        return _pool(node, op, shape, out, names, where, kernel, stride, padding,
                     bool(_argument(node, 5, "ceil_mode", False)), True)
    if _argument(node, 6, "divisor_override", None) is not None:
        raise ModelError(f"{where}: divisor_override cannot be split by rows")
    return _pool(node, op, shape, out, names, where, kernel, stride, padding,
                 bool(_argument(node, 4, "ceil_mode", False)), bool(_argument(node, 5, "count_include_pad", True)))


def _pool(node: torch.fx.Node, op: str, shape: tuple[int, ...], out: tuple[int, ...], names: tuple[str, ...],
          where: str, kernel: Any, stride: Any, padding: Any, ceil_mode: bool, count_include_pad: bool) -> _Op:
    if len(shape) != 3:
        raise ModelError(f"{where}: needs a C x H x W input, gets shape {shape}")
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride if stride is not None else kernel)
    ph, pw = _pair(padding)
    average = "avg" in op.lower()
    if average and (ph or pw) and not count_include_pad:
        raise ModelError(f"{where}: padded average pooling must count the padding "
                         "(count_include_pad=True) to be split by rows")
    floor = ((shape[1] + 2 * ph - kh) // sh + 1, (shape[2] + 2 * pw - kw) // sw + 1)
    if average and ceil_mode and floor != out[1:]:
        raise ModelError(f"{where}: average pooling in ceil_mode with a partial last window "
                         "cannot be split by rows (use ceil_mode=False or max pooling)")
    spec = _spec(node, op, POOL, shape, out, kernel=(kh, kw), stride=(sh, sw), padding=(ph, pw),
                 pad_value=float("-inf") if not average else 0.0)
    return _Op(spec, names, windowed(spec))


def _global_pool(node: torch.fx.Node, op: str, shape: tuple[int, ...], out: tuple[int, ...],
                 names: tuple[str, ...], call: Callable[..., torch.Tensor], where: str) -> _Op:
    if len(shape) != 3:
        raise ModelError(f"{where} ({op}): needs a C x H x W input, gets shape {shape}")
    if len(out) == 3 and out == shape and op.lower().startswith("adaptive"):  # the identity (VGG at 224)
        spec = _spec(node, op, ELEMENTWISE, shape, out)
        return _Op(spec, names, row_local(spec, call))
    if op in ("mean", "amax"):
        dims = _argument(node, 1, "dim", None)
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        if sorted(d % 4 for d in dims) != [2, 3]:
            raise ModelError(f"{where} ({op}): only a mean over the rows and columns (dim=(2, 3)) "
                             f"can end the spatial part, got dim={list(dims)}")
    spec = _spec(node, op, POOL, shape, out, spatial=False)
    return _Op(spec, names, whole_map(spec, call))


def _reshape(node: torch.fx.Node, op: str, shape: tuple[int, ...], out: tuple[int, ...],
             names: tuple[str, ...], call: Callable[..., torch.Tensor] | None, where: str) -> _Op:
    """Reshapes that keep rows and columns last (a channel shuffle's view, transpose, view)
    run on a slice; a flatten of a whole map ends the spatial part."""
    where = f"{where} ({op})"
    if len(shape) == 1 and len(out) == 1:
        spec = _spec(node, op, RESHAPE, shape, out)
        return _Op(spec, names, row_local(spec, lambda x: x))
    if len(shape) == 1 and len(out) >= 3:
        raise ModelError(f"{where}: turns the flat vector {list(shape)} back into a map {list(out)} "
                         "(as squeeze-and-excitation does with its per-channel scale); a map made "
                         "from a flat vector cannot be split by rows")
    if len(shape) >= 3 and len(out) == 1:
        if op == "flatten" and _argument(node, 1, "start_dim", 0) != 1:
            raise ModelError(f"{where}: only a flatten from dim 1 is supported")
        spec = _spec(node, op, RESHAPE, shape, out, spatial=False)
        return _Op(spec, names, whole_map(spec, lambda x: x.reshape(x.shape[0], -1)))
    rank = len(shape) + 1
    if op in ("view", "reshape") and len(shape) >= 3 and len(out) >= 3 and out[-2:] == shape[-2:]:
        keep = out[:-2]
        spec = _spec(node, op, RESHAPE, shape, out)
        return _Op(spec, names, row_local(spec, lambda x: x.reshape(x.shape[0], *keep, x.shape[-2], x.shape[-1])))
    if op == "transpose" and len(shape) >= 3 and call is not None:
        dims = {int(d) % rank for d in node.args[1:3]}  # type: ignore[arg-type]
        if not dims & {0, rank - 2, rank - 1}:
            spec = _spec(node, op, RESHAPE, shape, out)
            return _Op(spec, names, row_local(spec, call))
    if op == "permute" and len(shape) >= 3 and call is not None:
        order = node.args[1] if len(node.args) == 2 and isinstance(node.args[1], list | tuple) else node.args[1:]
        order = [int(d) % rank for d in order]  # type: ignore[arg-type,union-attr]
        if order[0] == 0 and order[-2:] == [rank - 2, rank - 1]:
            spec = _spec(node, op, RESHAPE, shape, out)
            return _Op(spec, names, row_local(spec, call))
    raise ModelError(f"{where}: reshapes {list(shape)} to {list(out)}, which mixes rows or "
                     "columns; only reshapes that keep rows and columns last can be split by rows")


# ---- stages -------------------------------------------------------------------------------
def _live(ops: list[_Op], output: str) -> list[_Op]:
    """The ops the output depends on (dead branches dropped)."""
    wanted = {output}
    kept = []
    for op in reversed(ops):
        if op.spec.name in wanted:
            kept.append(op)
            wanted.update(op.inputs)
    return kept[::-1]


def _stages(ops: list[_Op], output: str, input_shape: tuple[int, ...], name: str) -> list[LayerSpec]:
    """Cut the ops wherever one tensor alone crosses: the stages, one op or a block each."""
    last_use: dict[str, int] = {}
    for i, op in enumerate(ops):
        for value in op.inputs:
            last_use[value] = i
    last_use[output] = len(ops)
    if not ops:
        raise ModelError(f"{name}: the model has no layers")
    made = {op.spec.name for op in ops}
    live = {v for op in ops for v in op.inputs if v not in made}  # the input
    shape = input_shape
    stages: list[LayerSpec] = []
    group: list[_Op] = []
    for i, op in enumerate(ops):
        group.append(op)
        live = {v for v in live | {op.spec.name} if last_use.get(v, -1) > i}
        if live == {op.spec.name} and len(op.spec.out_shape) in (1, 3):
            stages.append(_stage(len(stages), group, shape, name))
            shape = op.spec.out_shape
            group = []
    assert not group, "the output is live after the last op"
    return stages


def _stage(index: int, group: list[_Op], in_shape: tuple[int, ...], name: str) -> LayerSpec:
    if len(group) == 1:
        return replace(group[0].spec, index=index)
    position = {op.spec.name: i for i, op in enumerate(group)}
    for op in group:
        if not op.spec.spatial:
            raise ModelError(f"{name}: {op.spec.where} ({op.spec.op}) reads the whole map inside a "
                             "block whose paths join again (as squeeze-and-excitation does); a "
                             "global pooling inside a block cannot be split by rows")
    nodes = tuple(Node(replace(op.spec, index=index), tuple(position.get(v, -1) for v in op.inputs))
                  for op in group)
    first, last = group[0].spec, group[-1].spec
    return LayerSpec(index=index, op="Block", kind=BLOCK, in_shape=in_shape, out_shape=last.out_shape,
                     macs=sum(op.spec.macs for op in group), params=sum(op.spec.params for op in group),
                     weight_bytes=sum(op.spec.weight_bytes for op in group),
                     name=f"block{index}", where=_common_path([op.spec.where for op in group]) or first.where,
                     nodes=nodes)


def _common_path(paths: list[str]) -> str:
    parts = [p.split(".") for p in paths]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return ".".join(common)

