"""The ModelGraph: a chain of layer specs, and the receptive-field arithmetic of row slices.

This module is the single source of layer math. A feature map lives at a *boundary*: boundary
`l` is the input of layer `l`, boundary 0 is the model input and boundary `len(layers)` its
output. A *region* of a boundary is a rectangle of rows and columns, half-open. A flat map (after
a flatten) of F features has F rows of width 1: a linear layer can compute a range of its output
features, reading all of its input.

FLOPs are multiply-accumulates x 2 for convolutions and linear layers; pooling and elementwise
layers count one operation per element they read (they have no MACs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from torch import nn

from halp.errors import ModelError

BYTES_PER_ELEMENT = 4  # float32 on the wire and in memory

# Layer kinds, as the latency model groups them.
CONV, DWCONV, POOL, LINEAR, ELEMENTWISE, RESHAPE = "conv", "dwconv", "pool", "linear", "elementwise", "reshape"
KINDS = (CONV, DWCONV, POOL, LINEAR, ELEMENTWISE, RESHAPE)


class Range(NamedTuple):
    """Half-open interval [start, stop) of rows or columns."""

    start: int
    stop: int

    @property
    def size(self) -> int:
        return max(0, self.stop - self.start)

    def __str__(self) -> str:
        return f"{self.start}:{self.stop}"


class Region(NamedTuple):
    """A rectangle of a feature map: rows x cols."""

    rows: Range
    cols: Range

    @property
    def empty(self) -> bool:
        return self.rows.size == 0 or self.cols.size == 0

    def contains(self, other: Region) -> bool:
        return (self.rows.start <= other.rows.start and other.rows.stop <= self.rows.stop
                and self.cols.start <= other.cols.start and other.cols.stop <= self.cols.stop)

    def __str__(self) -> str:
        return f"r{self.rows}c{self.cols}"


def region(rows: tuple[int, int], cols: tuple[int, int]) -> Region:
    return Region(Range(*rows), Range(*cols))


@dataclass(frozen=True)
class LayerSpec:
    """One layer of the chain: its kind, window, shapes and costs.

    `spatial` layers (convolution, pooling, elementwise) can run on a row slice; the others
    (global pooling, flatten, linear) need their whole input.
    """

    index: int
    op: str  # the torch class name, e.g. "Conv2d"
    kind: str  # one of KINDS
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    kernel: tuple[int, int] = (1, 1)  # effective kernel (dilation folded in)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    spatial: bool = True
    pad_value: float = 0.0  # what padding means: 0 for conv/avg pooling, -inf for max pooling
    macs: int = 0
    params: int = 0
    weight_bytes: int = 0

    @property
    def in_height(self) -> int:
        return _height(self.in_shape)

    @property
    def out_height(self) -> int:
        return _height(self.out_shape)

    @property
    def in_width(self) -> int:
        return self.in_shape[2] if len(self.in_shape) == 3 else 1

    @property
    def out_width(self) -> int:
        return self.out_shape[2] if len(self.out_shape) == 3 else 1

    @property
    def windowed(self) -> bool:
        """A spatial layer whose output row reads more than its own input row."""
        return self.spatial and (self.kernel != (1, 1) or self.stride != (1, 1) or self.padding != (0, 0))

    def needed(self, out: Region) -> Region:
        """The input region that `out` reads, clipped to the map."""
        if out.empty:
            return region((0, 0), (0, 0))
        if not self.spatial:
            return region((0, self.in_height), (0, self.in_width))
        return Region(
            _needed(out.rows, self.kernel[0], self.stride[0], self.padding[0], self.in_height),
            _needed(out.cols, self.kernel[1], self.stride[1], self.padding[1], self.in_width),
        )

    def computable(self, held: Region) -> Region:
        """The largest output region that `held` alone determines (real padding counts only at
        the true border of the map)."""
        if not self.spatial:
            full = region((0, self.in_height), (0, self.in_width))
            if held == full:
                return region((0, self.out_height), (0, self.out_width))
            return region((0, 0), (0, 0))
        rows = _computable(held.rows, self.kernel[0], self.stride[0], self.padding[0],
                           self.in_height, self.out_height)
        cols = _computable(held.cols, self.kernel[1], self.stride[1], self.padding[1],
                           self.in_width, self.out_width)
        if rows.size == 0 or cols.size == 0:
            return region((0, 0), (0, 0))
        return Region(rows, cols)

    def flops(self, out: Region) -> float:
        """Operations to compute `out` (see the module docstring for the convention)."""
        if out.empty:
            return 0.0
        share = (out.rows.size * out.cols.size) / (self.out_height * self.out_width)
        if self.kind in (CONV, DWCONV, LINEAR):
            return 2.0 * self.macs * share
        if self.kind == RESHAPE:
            return 0.0
        return float(_numel(self.in_shape)) * share


def _height(shape: tuple[int, ...]) -> int:
    """Rows of a map: H of C x H x W, the features of a flat map."""
    if len(shape) == 3:
        return shape[1]
    return shape[0] if len(shape) == 1 else 1


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _needed(out: Range, k: int, s: int, p: int, size: int) -> Range:
    start = out.start * s - p
    stop = (out.stop - 1) * s - p + k
    return Range(max(0, start), min(size, stop))


def _computable(held: Range, k: int, s: int, p: int, in_size: int, out_size: int) -> Range:
    if held.size == 0:
        return Range(0, 0)
    # First output row whose clipped window starts inside `held`.
    first = 0 if held.start == 0 else -(-(held.start + p) // s)
    # Last output row whose clipped window ends inside `held`.
    last = out_size - 1 if held.stop >= in_size else (held.stop + p - k) // s
    last = min(last, out_size - 1)
    if last < first:
        return Range(0, 0)
    return Range(first, last + 1)


def _pair(value: object) -> tuple[int, int]:
    if isinstance(value, tuple | list):
        return int(value[0]), int(value[1])
    return int(value), int(value)  # type: ignore[call-overload]


@dataclass
class ModelGraph:
    """The chain of `LayerSpec`s of one model, built from its PyTorch module."""

    name: str
    input_shape: tuple[int, int, int]
    layers: list[LayerSpec]
    modules: list[nn.Module] = field(repr=False, default_factory=list)

    # ---- building -------------------------------------------------------------------------
    @classmethod
    def from_module(cls, module: nn.Module, input_shape: tuple[int, int, int],
                    name: str = "model") -> ModelGraph:
        """Walk a (possibly nested) `nn.Sequential` and describe each leaf layer."""
        leaves = _leaves(module)
        if not leaves:
            raise ModelError(f"{name}: the module has no layers")
        layers: list[LayerSpec] = []
        shape: tuple[int, ...] = tuple(input_shape)
        for index, leaf in enumerate(leaves):
            spec = _describe(index, leaf, shape, name)
            layers.append(spec)
            shape = spec.out_shape
        return cls(name=name, input_shape=tuple(input_shape), layers=layers, modules=leaves)  # type: ignore[arg-type]

    # ---- shapes ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.layers)

    def shape(self, boundary: int) -> tuple[int, ...]:
        """The shape of the feature map at `boundary` (without the batch dimension)."""
        if boundary == 0:
            return self.input_shape
        return self.layers[boundary - 1].out_shape

    def height(self, boundary: int) -> int:
        return _height(self.shape(boundary))

    def width(self, boundary: int) -> int:
        shape = self.shape(boundary)
        return shape[2] if len(shape) == 3 else 1

    def full(self, boundary: int) -> Region:
        return region((0, self.height(boundary)), (0, self.width(boundary)))

    def rows(self, boundary: int, start: int, stop: int) -> Region:
        """Rows [start, stop) at full width."""
        return region((start, stop), (0, self.width(boundary)))

    def region_bytes(self, boundary: int, reg: Region) -> int:
        """Bytes of `reg` of the map at `boundary`, float32."""
        shape = self.shape(boundary)
        if reg.empty:
            return 0
        if len(shape) != 3:
            return _numel(shape) * reg.rows.size // _height(shape) * BYTES_PER_ELEMENT
        return shape[0] * reg.rows.size * reg.cols.size * BYTES_PER_ELEMENT

    @property
    def spatial_end(self) -> int:
        """The first boundary after which no layer can run on a row slice."""
        for layer in self.layers:
            if not layer.spatial:
                return layer.index
        return len(self.layers)

    # ---- receptive fields -----------------------------------------------------------------
    def _row_windows(self, start: int, stop: int) -> list[tuple[int, int, int, int, int]]:
        """(kernel, stride, padding, in height, out height) of the row-changing layers."""
        key = (start, stop)
        cache = self.__dict__.setdefault("_windows", {})
        if key not in cache:
            cache[key] = [(layer.kernel[0], layer.stride[0], layer.padding[0], layer.in_height, layer.out_height)
                          for layer in self.layers[start:stop]
                          if layer.spatial and (layer.kernel[0], layer.stride[0], layer.padding[0]) != (1, 1, 0)]
        return cache[key]

    def row_needed(self, start: int, stop: int, rows: tuple[int, int]) -> tuple[int, int]:
        """Rows-only `rows_needed` at full width: the planners' hot path."""
        if self.layers[start:stop] and not all(layer.spatial for layer in self.layers[start:stop]):
            return (0, self.height(start))
        a, b = rows
        if b <= a:
            return (0, 0)
        for k, st, p, h_in, _ in reversed(self._row_windows(start, stop)):
            a, b = max(0, a * st - p), min(h_in, (b - 1) * st - p + k)
        return (a, b)

    def row_computable(self, start: int, stop: int, rows: tuple[int, int]) -> tuple[int, int]:
        """Rows-only `computable` at full width (a block of whole rows)."""
        if not all(layer.spatial for layer in self.layers[start:stop]):
            full = rows == (0, self.height(start))
            return (0, self.height(stop)) if full else (0, 0)
        held = Range(*rows)
        for k, st, p, h_in, h_out in self._row_windows(start, stop):
            held = _computable(held, k, st, p, h_in, h_out)
            if held.size == 0:
                return (0, 0)
        return (held.start, held.stop)

    def regions_needed(self, start: int, stop: int, out: Region) -> list[Region]:
        """For layers [start, stop) producing `out` at boundary `stop`: the region needed at
        every boundary from `start` to `stop` (index 0 is the input region)."""
        needed = [out]
        for layer in reversed(self.layers[start:stop]):
            needed.append(layer.needed(needed[-1]))
        return needed[::-1]

    def rows_needed(self, start: int, stop: int, out: Region) -> Region:
        """The input region at boundary `start` that `out` at boundary `stop` reads."""
        return self.regions_needed(start, stop, out)[0]

    def computable(self, start: int, stop: int, held: Region) -> Region:
        """The largest region at boundary `stop` that `held` at boundary `start` determines."""
        reg = held
        for layer in self.layers[start:stop]:
            reg = layer.computable(reg)
            if reg.empty:
                return reg
        return reg

    # ---- costs ----------------------------------------------------------------------------
    def layer_regions(self, start: int, stop: int, out: Region) -> list[tuple[LayerSpec, Region, Region]]:
        """(layer, input region, output region) for each layer of a fused run producing `out`."""
        needed = self.regions_needed(start, stop, out)
        return [(layer, needed[i], needed[i + 1]) for i, layer in enumerate(self.layers[start:stop])]

    def flops(self, start: int, stop: int, out: Region | None = None) -> float:
        out = self.full(stop) if out is None else out
        return sum(layer.flops(o) for layer, _, o in self.layer_regions(start, stop, out))

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    def cut_points(self) -> list[int]:
        """Boundaries where a segment may start or end in the spatial part of the network:
        before every weighted or windowed layer, and at the end of the spatial part."""
        cuts = [0]
        for layer in self.layers[: self.spatial_end]:
            if layer.index > 0 and layer.kind in (CONV, DWCONV, POOL):
                cuts.append(layer.index)
        if self.spatial_end not in cuts:
            cuts.append(self.spatial_end)
        return cuts

    def describe(self) -> list[dict[str, object]]:
        return [
            {"index": layer.index, "op": layer.op, "kind": layer.kind, "in": list(layer.in_shape),
             "out": list(layer.out_shape), "kernel": list(layer.kernel), "stride": list(layer.stride),
             "padding": list(layer.padding), "groups": layer.groups, "macs": layer.macs, "params": layer.params}
            for layer in self.layers
        ]


def _leaves(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        out: list[nn.Module] = []
        for child in module:
            out.extend(_leaves(child))
        return out
    return [module]


def _conv_out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


def _describe(index: int, m: nn.Module, shape: tuple[int, ...], name: str) -> LayerSpec:
    where = f"{name} layer {index} ({type(m).__name__})"
    op = type(m).__name__
    params = sum(p.numel() for p in m.parameters())
    if isinstance(m, nn.Conv2d):
        if len(shape) != 3 or shape[0] != m.in_channels:
            raise ModelError(f"{where}: expects {m.in_channels} input channels, gets shape {shape}")
        if m.padding_mode != "zeros":
            raise ModelError(f"{where}: padding_mode {m.padding_mode!r} is not supported (zeros only)")
        kh, kw = _pair(m.kernel_size)
        dh, dw = _pair(m.dilation)
        kh, kw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        sh, sw = _pair(m.stride)
        if isinstance(m.padding, str):
            if m.padding == "valid":
                ph, pw = 0, 0
            elif kh % 2 == 1 and kw % 2 == 1:  # "same" with stride 1 and an odd kernel
                ph, pw = kh // 2, kw // 2
            else:
                raise ModelError(f"{where}: padding='same' with an even kernel is asymmetric; give numbers")
        else:
            ph, pw = _pair(m.padding)
        c, h, w = shape
        out = (m.out_channels, _conv_out(h, kh, sh, ph), _conv_out(w, kw, sw, pw))
        if out[1] <= 0 or out[2] <= 0:
            raise ModelError(f"{where}: input {shape} is too small for kernel {kh}x{kw}")
        depthwise = m.groups > 1 and m.groups == m.in_channels
        taps_h, taps_w = _pair(m.kernel_size)
        macs = out[0] * out[1] * out[2] * (c // m.groups) * taps_h * taps_w
        return LayerSpec(index, op, DWCONV if depthwise else CONV, shape, out, (kh, kw), (sh, sw),
                         (ph, pw), m.groups, True, 0.0, macs, params, params * BYTES_PER_ELEMENT)
    if isinstance(m, nn.MaxPool2d | nn.AvgPool2d):
        if len(shape) != 3:
            raise ModelError(f"{where}: needs a C x H x W input, gets shape {shape}")
        if getattr(m, "ceil_mode", False):
            raise ModelError(f"{where}: ceil_mode=True is not supported")
        if isinstance(m, nn.MaxPool2d) and _pair(m.dilation) != (1, 1):
            raise ModelError(f"{where}: dilated pooling is not supported")
        kh, kw = _pair(m.kernel_size)
        sh, sw = _pair(m.stride if m.stride is not None else m.kernel_size)
        ph, pw = _pair(m.padding)
        if isinstance(m, nn.AvgPool2d) and (ph or pw) and not m.count_include_pad:
            raise ModelError(f"{where}: padded average pooling must count the padding "
                             "(count_include_pad=True) to be split by rows")
        if isinstance(m, nn.AvgPool2d) and m.divisor_override is not None:
            raise ModelError(f"{where}: divisor_override is not supported")
        c, h, w = shape
        out = (c, _conv_out(h, kh, sh, ph), _conv_out(w, kw, sw, pw))
        if out[1] <= 0 or out[2] <= 0:
            raise ModelError(f"{where}: input {shape} is too small for a {kh}x{kw} window")
        pad_value = float("-inf") if isinstance(m, nn.MaxPool2d) else 0.0
        return LayerSpec(index, op, POOL, shape, out, (kh, kw), (sh, sw), (ph, pw), 1, True, pad_value)
    if isinstance(m, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
        if len(shape) != 3:
            raise ModelError(f"{where}: needs a C x H x W input, gets shape {shape}")
        oh, ow = _pair(m.output_size if m.output_size is not None else 1)  # type: ignore[arg-type]
        return LayerSpec(index, op, POOL, shape, (shape[0], oh, ow), spatial=False)
    if isinstance(m, nn.BatchNorm2d | nn.ReLU | nn.ReLU6 | nn.LeakyReLU | nn.Hardswish
                  | nn.Sigmoid | nn.Tanh | nn.Dropout | nn.Dropout2d | nn.Identity | nn.SiLU):
        if isinstance(m, nn.BatchNorm2d) and (len(shape) != 3 or shape[0] != m.num_features):
            raise ModelError(f"{where}: expects {m.num_features} channels, gets shape {shape}")
        return LayerSpec(index, op, ELEMENTWISE, shape, shape, params=params,
                         weight_bytes=params * BYTES_PER_ELEMENT)
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise ModelError(f"{where}: only Flatten(start_dim=1) is supported")
        return LayerSpec(index, op, RESHAPE, shape, (_numel(shape),), spatial=False)
    if isinstance(m, nn.Linear):
        if len(shape) != 1 or shape[0] != m.in_features:
            raise ModelError(f"{where}: expects {m.in_features} features, gets shape {shape} "
                             "(add an nn.Flatten before it)")
        return LayerSpec(index, op, LINEAR, shape, (m.out_features,), spatial=False,
                         macs=m.in_features * m.out_features, params=params,
                         weight_bytes=params * BYTES_PER_ELEMENT)
    raise ModelError(f"{where}: layer type {op} is not supported; a chain CNN may use Conv2d, "
                     "BatchNorm2d, ReLU, pooling, Flatten, Linear and Dropout")
