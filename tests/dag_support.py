"""DAG models for tests: random residual, inception, Inception-ResNet, dense and ShuffleNet
blocks drawn by hypothesis, written the way their reference code writes them; DenseNet,
SqueezeNet, skip-adding Sequentials and refused models as factory-file sources; and scenarios
that run a model through the real path (scenario file, `prepare`, `make_plan`).

A drawn model is a description (tuples, which hypothesis shrinks) that `build_dag` turns into an
`nn.Module` with its own forward, taking 8 channels. Channel counts are multiples of 4, so
grouped convolutions (2 or 4 groups) and channel shuffles of 2 groups always fit; every branch
of a concatenation gives the same rows and columns by construction (odd kernels padded by half,
or pooling windows whose sizes agree with them), so the only refusal a drawn model may meet is
an input too small for it.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
import torch.fx
from hypothesis import reject
from hypothesis import strategies as st
from torch import nn

from halp.errors import ModelError
from halp.methods.halp import Split
from halp.model.graph import ModelGraph
from halp.model.trace import trace_model


# ---- building blocks ----------------------------------------------------------------------
def conv_bn(c_in: int, c_out: int, kernel: int | tuple[int, int], stride: int = 1,
            padding: int | tuple[int, int] = 0, dilation: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle, as torchvision's shufflenetv2.py writes it."""
    batchsize, num_channels, height, width = x.size()
    channels_per_group = num_channels // groups
    x = x.view(batchsize, groups, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    x = x.view(batchsize, -1, height, width)
    return x


def channel_shuffle_permuted(x: torch.Tensor, groups: int) -> torch.Tensor:
    """The same shuffle through `x.shape`, permute and reshape."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).permute(0, 2, 1, 3, 4).reshape(b, c, h, w)


class Residual(nn.Module):
    """A ResNet basic block: two convolutions and a shortcut (identity, a strided 1x1
    projection, or a ceil-mode 2x2 max pooling then a 1x1 projection), added as `add` says."""

    def __init__(self, c: int, out: int, kernel: int, stride: int, shortcut: str, body: str, add: str):
        super().__init__()
        pad = kernel // 2
        self.conv1: nn.Module
        if body == "dilated":
            self.conv1 = nn.Conv2d(c, out, 3, stride, 2, dilation=2, bias=False)
        elif body == "grouped":
            self.conv1 = nn.Conv2d(c, out, kernel, stride, pad, groups=4, bias=False)
        elif body == "depthwise":
            self.conv1 = nn.Sequential(nn.Conv2d(c, c, kernel, stride, pad, groups=c, bias=False),
                                       nn.Conv2d(c, out, 1, bias=False))
        else:
            self.conv1 = nn.Conv2d(c, out, kernel, stride, pad, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out, out, kernel, 1, pad, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.downsample: nn.Module | None = None
        if shortcut == "projection":
            self.downsample = nn.Sequential(nn.Conv2d(c, out, 1, stride, bias=False), nn.BatchNorm2d(out))
        elif shortcut == "pool":
            self.downsample = nn.Sequential(nn.MaxPool2d(2, 2, ceil_mode=True),
                                            nn.Conv2d(c, out, 1, bias=False), nn.BatchNorm2d(out))
        self.add = add

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        if self.add == "+=":
            out += identity
        elif self.add == "torch.add":
            out = torch.add(out, identity)
        else:
            out = out + identity
        return self.relu(out)


class Concat(nn.Module):
    """An inception module: branches read the same map; their outputs are concatenated."""

    def __init__(self, branches: list[nn.Module]):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [branch(x) for branch in self.branches]
        return torch.cat(outputs, 1)


class Dense(nn.Module):
    """A DenseNet block: each layer reads the concatenation of the block's input and every
    layer's output before it; the block gives all of them, concatenated."""

    def __init__(self, c: int, layers: int, growth: int, kernel: int):
        super().__init__()
        self.layers = nn.ModuleList(conv_bn(c + i * growth, growth, kernel, 1, kernel // 2)
                                    for i in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class ScaledResidual(nn.Module):
    """An Inception-ResNet block: an inception module of stride 1, projected back to the
    input's channels, scaled and added to the input."""

    def __init__(self, c: int, branches: list[nn.Module], width: int, scale: float):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.project = nn.Conv2d(width, c, 1)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self.project(torch.cat([branch(x) for branch in self.branches], 1))
        return torch.relu(x + self.scale * up)


class Shuffle(nn.Module):
    """A ShuffleNet-V2 unit: split the channels in two (stride 1) or feed both branches the
    whole map (stride 2), concatenate, shuffle."""

    def __init__(self, c: int, kernel: int, stride: int, split: str, shuffle: str):
        super().__init__()
        self.stride, self.split, self.shuffle = stride, split, shuffle
        self.first = c // 4 if split == "split" else c // 2  # channels passed through at stride 1
        pad = kernel // 2
        if stride == 1:
            rest = c - self.first
            self.branch1: nn.Module = nn.Identity()
            self.branch2 = nn.Sequential(conv_bn(rest, rest, 1),
                                         nn.Conv2d(rest, rest, kernel, 1, pad, groups=rest, bias=False),
                                         nn.BatchNorm2d(rest), conv_bn(rest, rest, 1))
        else:
            half = c // 2
            self.branch1 = nn.Sequential(nn.Conv2d(c, c, kernel, stride, pad, groups=c, bias=False),
                                         nn.BatchNorm2d(c), conv_bn(c, half, 1))
            self.branch2 = nn.Sequential(conv_bn(c, half, 1),
                                         nn.Conv2d(half, half, kernel, stride, pad, groups=half, bias=False),
                                         nn.BatchNorm2d(half), conv_bn(half, half, 1))
        self.shuffler = nn.ChannelShuffle(2) if shuffle == "module" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            if self.split == "chunk":
                x1, x2 = x.chunk(2, dim=1)
            elif self.split == "torch.chunk":
                x1, x2 = torch.chunk(x, 2, 1)
            else:
                x1, x2 = torch.split(x, [self.first, x.shape[1] - self.first], dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        if self.shuffler is not None:
            return self.shuffler(out)
        if self.shuffle == "permute":
            return channel_shuffle_permuted(out, 2)
        return channel_shuffle(out, 2)


class Dag(nn.Module):
    """Maybe a stem, the drawn parts, and maybe a classifier head; it takes 8 channels."""

    def __init__(self, parts: list[nn.Module], channels: int, head: str, stem: bool):
        super().__init__()
        self.stem = conv_bn(INPUT_CHANNELS, INPUT_CHANNELS, 3, 1, 1) if stem else None
        self.features = nn.Sequential(*parts)
        self.head = head
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stem is not None:
            x = self.stem(x)
        x = self.features(x)
        if self.head == "pool":
            return self.fc(torch.flatten(self.avgpool(x), 1))
        if self.head == "mean":
            return self.fc(x.mean((2, 3)))
        return x


# ---- drawing ------------------------------------------------------------------------------
CHANNELS = st.sampled_from([4, 8, 12])
STRIDE = st.sampled_from([1, 1, 2])
BRANCH = st.one_of(
    st.tuples(st.just("conv"), st.sampled_from([1, 3, 5]), CHANNELS),
    st.tuples(st.just("asymmetric"), st.sampled_from([3, 7]), CHANNELS),  # 1xk then kx1
    st.tuples(st.just("dilated"), st.integers(1, 3), CHANNELS),
    st.tuples(st.just("grouped"), st.sampled_from([2, 4]), CHANNELS),
    st.tuples(st.just("depthwise"), st.sampled_from([3, 5]), CHANNELS),
    st.tuples(st.just("maxpool"), st.sampled_from(["ceil", "padded"]), st.sampled_from([0, 4, 8])),
    st.tuples(st.just("avgpool"), st.just("padded"), st.sampled_from([0, 4, 8])),  # 0: no 1x1 after
)
PART = st.one_of(
    st.tuples(st.just("residual"), st.sampled_from([1, 3]), STRIDE,
              st.sampled_from(["identity", "projection", "pool"]),
              st.sampled_from(["plain", "dilated", "grouped", "depthwise"]),
              st.sampled_from(["+", "+=", "torch.add"]), CHANNELS),
    st.tuples(st.just("concat"), STRIDE, st.lists(BRANCH, min_size=2, max_size=4)),
    st.tuples(st.just("dense"), st.integers(1, 3), st.sampled_from([4, 8]), st.sampled_from([1, 3])),
    st.tuples(st.just("scaled residual"), st.lists(BRANCH, min_size=1, max_size=3),
              st.sampled_from([0.2, 1.0])),
    st.tuples(st.just("shuffle"), st.sampled_from([3, 5]), STRIDE,
              st.sampled_from(["chunk", "torch.chunk", "split"]),
              st.sampled_from(["view", "module", "permute"])),
    st.tuples(st.just("conv"), st.sampled_from([1, 3]), STRIDE, CHANNELS),
    st.tuples(st.just("maxpool"), st.sampled_from([2, 3]), st.sampled_from([1, 2]), st.integers(0, 1),
              st.booleans()),
    st.tuples(st.just("avgpool"), st.sampled_from([2, 3]), st.sampled_from([1, 2]), st.integers(0, 1)),
)
DAG = st.tuples(st.lists(PART, min_size=1, max_size=4), st.sampled_from(["none", "none", "pool", "mean"]),
                st.booleans())
SIZE = st.tuples(st.integers(12, 36), st.integers(12, 36))  # rows, columns
INPUT_CHANNELS = 8


def _branch(desc: tuple[Any, ...], c: int, stride: int) -> tuple[nn.Module, int]:
    kind, param, out = desc
    if kind == "conv":
        return conv_bn(c, out, param, stride, param // 2), out
    if kind == "asymmetric":  # Inception-v3's 1x7 then 7x1
        return nn.Sequential(conv_bn(c, out, (1, param), 1, (0, param // 2)),
                             conv_bn(out, out, (param, 1), stride, (param // 2, 0))), out
    if kind == "dilated":
        return conv_bn(c, out, 3, stride, param, dilation=param), out
    if kind == "grouped":
        return conv_bn(c, out, 3, stride, 1, groups=param), out
    if kind == "depthwise":
        return nn.Sequential(conv_bn(c, c, param, stride, param // 2, groups=c), conv_bn(c, out, 1)), out
    if kind == "maxpool":
        if stride == 1:  # GoogLeNet's pooling branch
            pool: nn.Module = nn.MaxPool2d(3, 1, 1, ceil_mode=True)
        elif param == "ceil":  # ceil(H / 2) rows, as a padded odd kernel of stride 2 gives
            pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        else:
            pool = nn.MaxPool2d(3, 2, 1)
    else:
        pool = nn.AvgPool2d(3, stride, 1)
    if out == 0:
        return pool, c
    return nn.Sequential(pool, conv_bn(c, out, 1)), out


def build_dag(desc: tuple[list[tuple[Any, ...]], str, bool], seed: int = 0) -> nn.Module:
    """The module a drawn description describes, with seeded weights and batch-norm statistics
    that make every layer matter, in eval mode."""
    parts_desc, head, stem = desc
    torch.manual_seed(seed)
    parts: list[nn.Module] = []
    c = INPUT_CHANNELS
    for part in parts_desc:
        kind = part[0]
        if kind == "residual":
            _, kernel, stride, shortcut, body, add, out = part
            if shortcut == "identity":
                stride, out = 1, c
            elif shortcut == "pool":
                stride = 2
            parts.append(Residual(c, out, kernel, stride, shortcut, body, add))
            c = out
        elif kind == "concat":
            _, stride, branches = part
            made = [_branch(b, c, stride) for b in branches]
            parts.append(Concat([m for m, _ in made]))
            c = sum(n for _, n in made)
        elif kind == "dense":
            _, layers, growth, kernel = part
            parts.append(Dense(c, layers, growth, kernel))
            c += layers * growth
        elif kind == "scaled residual":
            _, branches, scale = part
            made = [_branch(b, c, 1) for b in branches]
            parts.append(ScaledResidual(c, [m for m, _ in made], sum(n for _, n in made), scale))
        elif kind == "shuffle":
            _, kernel, stride, split, shuffle = part
            parts.append(Shuffle(c, kernel, stride, split, shuffle))
        elif kind == "conv":
            _, kernel, stride, out = part
            parts.append(conv_bn(c, out, kernel, stride, kernel // 2))
            c = out
        elif kind == "maxpool":
            _, kernel, stride, pad, ceil = part
            parts.append(nn.MaxPool2d(kernel, stride, min(pad, kernel // 2), ceil_mode=ceil))
        else:
            _, kernel, stride, pad = part
            parts.append(nn.AvgPool2d(kernel, stride, min(pad, kernel // 2)))
    model = Dag(parts, c, head, stem)
    randomise_batch_norms(model)
    return model.eval()


def randomise_batch_norms(model: nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)


def traced_dag(desc: tuple[list[tuple[Any, ...]], str, bool],
               size: tuple[int, int]) -> tuple[nn.Module, ModelGraph]:
    """The drawn model and its graph for a hypothesis example, which is rejected where the
    model shrinks the map to nothing: the one refusal a drawn model may meet. Any other error
    fails the test."""
    model = build_dag(desc)
    try:
        return model, trace_model(model, (INPUT_CHANNELS, *size), "dag")
    except ModelError as exc:
        if "too small" in str(exc):
            reject()
        raise


def boundary_maps(model: nn.Module, graph: ModelGraph, x: torch.Tensor) -> list[torch.Tensor]:
    """The whole map at every boundary of `graph`, as torch computes the whole model (each
    value copied: an in-place op would change it later)."""
    traced = torch.fx.GraphModule(model, torch.fx.Tracer().trace(model))
    values: dict[str, torch.Tensor] = {}

    class Keep(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            result = super().run_node(n)
            if isinstance(result, torch.Tensor):
                values[n.name] = result.clone()
            return result

    with torch.no_grad():
        Keep(traced).run(x)
    names = [layer.nodes[-1].spec.name if layer.nodes else layer.name for layer in graph.layers]
    return [x, *(values[name] for name in names)]


# ---- scenarios ----------------------------------------------------------------------------
# Raspberry Pi 4 profiles: computing is slow enough against the links that the planners share
# even these small models' rows.
DEVICES = {
    2: """\
devices:
  - {name: host, role: host, profile: rpi4}
  - {name: pi1, profile: rpi4, speed: 0.6}
network: {kind: star, bandwidth: 300Mbps}
""",
    3: """\
devices:
  - {name: host, role: host, profile: rpi4}
  - {name: pi1, profile: rpi4, speed: 1.7}
  - {name: pi2, profile: rpi4, speed: 0.5}
network: {kind: star, bandwidth: 100Mbps, links: {pi2: 40Mbps}}
""",
}
# Every planner; deepthings as it chooses its fused layers and fused through every block.
METHODS = ["standalone", "equal", "halp", "modnn", "deepthings", "deepthings-fused", "offload"]
SPLITTING = {"equal", "modnn", "deepthings-fused"}  # the methods that always share blocks' rows


def write_scenario(folder: Path, model: str, devices: int, name: str = "dag") -> Path:
    """A scenario of `model` (the YAML of its `model:` mapping) on 2 or 3 devices."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{devices}.yaml"
    path.write_text(f"name: {name}\nseed: 1\nmodel: {model}\n{DEVICES[devices]}method: {{name: halp}}\n")
    return path


def random_shares(graph: ModelGraph, secondaries: tuple[str, ...], seed: int) -> list[Split]:
    """HALP splits of random segments with random rows for each secondary (gaps are the
    host's)."""
    rng = random.Random(seed)
    cuts = graph.cut_points()
    chosen = sorted({0, graph.spatial_end, *rng.sample(cuts, k=min(2, len(cuts)))})
    splits = []
    for a, b in zip(chosen, chosen[1:], strict=False):
        height = graph.height(a)
        edges = sorted(rng.randint(0, height) for _ in range(2 * len(secondaries)))
        order = tuple(rng.sample(secondaries, k=len(secondaries)))
        blocks = tuple((edges[2 * i], edges[2 * i + 1]) for i in range(len(secondaries)))
        splits.append(Split(a, b, order, blocks, 0.0))
    return splits


# ---- models written as users write them, for factory files ----------------------------------
# DenseNet as torchvision's densenet.py writes it, smaller: each layer of a dense block reads
# the concatenation of every map before it; a transition halves the map with a 2x2 average.
DENSENET = '''\
import torch
import torch.nn.functional as F
from torch import nn


class DenseLayer(nn.Module):
    def __init__(self, c_in, growth, bn_size=2):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(c_in)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(c_in, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features):
        x = torch.cat(features, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseBlock(nn.ModuleDict):
    def __init__(self, layers, c_in, growth):
        super().__init__()
        for i in range(layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(c_in + i * growth, growth))

    def forward(self, x):
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.norm = nn.BatchNorm2d(c_in)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)


class DenseNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(3, 16, 3, padding=1, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(16))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        self.features.add_module("pool0", nn.MaxPool2d(3, 2, 1))
        self.features.add_module("denseblock1", DenseBlock(3, 16, 8))
        self.features.add_module("transition1", Transition(40, 20))
        self.features.add_module("denseblock2", DenseBlock(3, 20, 8))
        self.features.add_module("norm5", nn.BatchNorm2d(44))
        self.classifier = nn.Linear(44, 10)

    def forward(self, x):
        features = self.features(x)
        out = F.relu(features, inplace=True)
        out = F.adaptive_avg_pool2d(out, (1, 1))
        out = torch.flatten(out, 1)
        return self.classifier(out)


def build():
    return DenseNet()
'''

# SqueezeNet 1.1 as torchvision's squeezenet.py writes it, narrower: fire modules (squeeze 1x1,
# expand 1x1 and 3x3 concatenated) between ceil-mode 3x3 max poolings of stride 2.
SQUEEZENET = '''\
import torch
from torch import nn


class Fire(nn.Module):
    def __init__(self, inplanes, squeeze_planes, expand1x1_planes, expand3x3_planes):
        super().__init__()
        self.inplanes = inplanes
        self.squeeze = nn.Conv2d(inplanes, squeeze_planes, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze_planes, expand1x1_planes, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze_planes, expand3x3_planes, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
        )


class SqueezeNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, kernel_size=3, stride=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(16, 4, 8, 8),
            Fire(16, 4, 8, 8),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(16, 8, 16, 16),
            Fire(32, 8, 16, 16),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(32, 8, 16, 16),
        )
        final_conv = nn.Conv2d(32, num_classes, kernel_size=1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5), final_conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1))
        )

    def forward(self, x):
        x = self.features(x)
        x = self.classifier(x)
        return torch.flatten(x, 1)


def build():
    return SqueezeNet()
'''

# nn.Sequential subclasses whose forward adds a skip: read as their list of children they are a
# chain, and a plan of that chain computes something else.
SEQUENTIAL_SKIPS = '''\
import torch
from torch import nn


class Residual(nn.Sequential):
    def forward(self, x):
        return super().forward(x) + x


class Looped(nn.Sequential):
    def forward(self, x):
        out = x
        for layer in self:
            out = layer(out)
        return torch.relu(out + x)


def body(c):
    return [nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1)]


def build():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        Residual(*body(16)),
        nn.MaxPool2d(2),
        Looped(*body(16)),
        Residual(*body(16)),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )
'''

# Models the testbed cannot split (or would compute wrongly: an in-place change the traced graph
# cannot see), each with the refused part at layer1.0 (or at the top).
REFUSED = '''\
import torch
import torch.nn.functional as F
from torch import nn


class Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:
            return y
        return -y


class SqueezeExcitation(nn.Module):  # torchvision.ops.SqueezeExcitation
    def __init__(self, c, squeeze):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, c, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Sigmoid()

    def forward(self, x):
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class SELayer(nn.Module):  # the SENet paper's, with linear layers
    def __init__(self, c, reduction=4):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(c, c // reduction, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(c // reduction, c, bias=False), nn.Sigmoid())

    def forward(self, x):
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        y = self.fc(y).view(b, c, 1, 1)
        return x * y.expand_as(x)


class SEBlock(nn.Module):
    def __init__(self, se):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.se = se

    def forward(self, x):
        return x + self.se(self.conv(x))


class Upsampled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2)

    def forward(self, x):
        return self.conv(x) + self.up(F.max_pool2d(x, 2))


class Interpolated(Upsampled):
    def forward(self, x):
        return self.conv(x) + F.interpolate(F.max_pool2d(x, 2), scale_factor=2.0)


class Cropped(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.conv(x)[:, :, 1:]


class RowSplit(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        top, bottom = torch.chunk(x, 2, dim=2)
        return torch.cat([self.conv(top), bottom], dim=2)


class Reversed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        return torch.cat(torch.split(self.conv(x), 2, dim=1)[::-1], 1)


class Net(nn.Module):
    def __init__(self, block):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layer1 = nn.Sequential(block)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layer1(self.stem(x))), 1))


class InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        out = self.conv(x)
        out.relu_()
        return out + x


class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        y = self.stem(x)
        return y, torch.relu(y)


def control_flow():
    return Net(Gate())


def squeeze_excitation():
    return Net(SEBlock(SqueezeExcitation(8, 2)))


def squeeze_excitation_linear():
    return Net(SEBlock(SELayer(8)))


def upsample():
    return Net(Upsampled())


def interpolate():
    return Net(Interpolated())


def indexing():
    return Net(Cropped())


def row_split():
    return Net(RowSplit())


def in_place():
    return Net(InPlace())


def split_slice():
    return Net(Reversed())


def pair():
    return Pair()
'''

# (factory function in REFUSED, words its one line must hold: the module path, the op, why)
REFUSALS = [
    ("control_flow", ["layer1.0", "Gate", "if y.sum() > 0", "torch.fx cannot trace"]),
    ("squeeze_excitation", ["layer1.0.se", "mul", "squeeze-and-excitation"]),
    ("squeeze_excitation_linear", ["layer1.0.se", "view", "squeeze-and-excitation"]),
    ("upsample", ["layer1.0.up", "Upsample", "cannot be split by rows"]),
    ("interpolate", ["layer1.0.interpolate", "interpolate", "cannot be split by rows"]),
    ("indexing", ["layer1.0.getitem", "indexes a feature map"]),
    ("in_place", ["layer1.0.relu_", "relu_", "in place", "layer1.0.add"]),
    ("pair", ["forward must return one tensor", "tuple"]),
    ("row_split", ["layer1.0.chunk", "chunk", "dim=2"]),
    ("split_slice", ["layer1.0.getitem", "indexes a split with slice(None, None, -1)", "integer"]),
]


def write_factory(folder: Path, source: str, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(source)
    return path
