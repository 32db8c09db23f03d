"""The model zoo: VGG-16, the 16 MobileNet-V1 variants, and ResNet-18, -34, -50, MobileNet-V2
and GoogLeNet at any resolution from 32 to 1024, all defined here (no torchvision).

The last five have torchvision's module names and structure (`resnet.py`, `mobilenet_v2.py`,
`googlenet.py`), so a `state_dict` saved from torchvision's model of the same name is a
weights file for ours, and gives the same outputs (tests/test_model_families.py); GoogLeNet's
training-only auxiliary classifiers are dropped from such a file.

Weights are random from a fixed seed, so every device that builds the same `ModelSpec`
holds the same numbers without downloading anything; a user's `state_dict` can replace them.
A user's own chain CNN is any `nn.Sequential` of supported layers (see `halp.model.graph`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from halp.errors import HalpError, ModelError
from halp.model.googlenet import googlenet
from halp.model.mobilenet_v2 import mobilenet_v2
from halp.model.resnet import resnet18, resnet34, resnet50
from halp.tensorfile import load_state_dict_checked, load_tensor_file, state_dict_of
from halp.userfiles import MB, checked_file

MOBILENET_WIDTHS = (1.0, 0.75, 0.5, 0.25)
MOBILENET_RESOLUTIONS = (224, 192, 160, 128)
# torchvision's ImageNet models, by torchvision's names, with the names papers give them
TORCHVISION_MODELS: dict[str, tuple[str, Callable[[], nn.Module]]] = {
    "resnet18": ("ResNet-18", resnet18),
    "resnet34": ("ResNet-34", resnet34),
    "resnet50": ("ResNet-50", resnet50),
    "mobilenet_v2": ("MobileNet-V2", mobilenet_v2),
    "googlenet": ("GoogLeNet", googlenet),
}
# Their global pooling takes any side; below 32, their total stride, the last stage would
# convolve mostly padding, and 1024 bounds what one request costs.
TORCHVISION_RESOLUTIONS = range(32, 1024 + 1)
# Keys of a torchvision state_dict for parts only training uses, which our models leave out,
# dropped from a weights file before its keys are checked: GoogLeNet's auxiliary classifiers.
TRAINING_ONLY_PREFIXES: dict[str, tuple[str, ...]] = {"googlenet": ("aux1.", "aux2.")}
MODEL_NAMES = ("vgg16", "mobilenet_v1", *TORCHVISION_MODELS, "custom")
MAX_FACTORY_FILE_BYTES = 10 * MB  # a custom model's Python file

# (output channels, stride) of MobileNet-V1's 13 depthwise-separable blocks.
_MOBILENET_BLOCKS = [
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
]
_VGG16_CONFIG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                 512, 512, 512, "M", 512, 512, 512, "M"]


@dataclass(frozen=True)
class ModelSpec:
    """What to build: a zoo name with its multipliers, or `custom` from `module:function`.

    `weights` is an optional path to a `state_dict` saved with `torch.save`; it is read by
    `halp.tensorfile` (`weights_only=True`), so a weights file can never run code, and must
    have exactly the model's keys and shapes.
    """

    name: str
    width: float = 1.0
    resolution: int = 224
    seed: int = 0
    weights: str | None = None
    factory: str | None = None  # "package.module:function" for name == "custom"
    input_shape: tuple[int, int, int] | None = None  # (C, H, W) for custom models
    # (file role, sha256) of `weights` and a factory file, as the host hashed them: set on a
    # worker, which builds from its own copy of each (`halp.runtime.files.localise`)
    digests: tuple[tuple[str, str], ...] = ()

    @property
    def variant(self) -> str:
        """Short name used in reports: "vgg16", "0.5_160" for MobileNet-V1, "resnet18" at 224
        and "resnet18_160" at other resolutions."""
        if self.name == "mobilenet_v1":
            return f"{float(self.width)!r}_{self.resolution}"
        if self.name in TORCHVISION_MODELS and self.resolution != 224:
            return f"{self.name}_{self.resolution}"
        if self.name == "custom":  # the factory without its folder: plans name no host path
            if self.factory_file is not None:
                return f"{self.factory_file.stem}:{self.factory.rpartition(':')[2]}"  # type: ignore[union-attr]
            return self.factory or "custom"
        return self.name

    @property
    def factory_file(self) -> Path | None:
        """The `.py` file of a `file.py:function` factory (None for a module name)."""
        where = (self.factory or "").rpartition(":")[0]
        return Path(where) if where.endswith(".py") else None

    def with_factory_file(self, path: str | Path) -> ModelSpec:
        """The same factory function, loaded from `path` (a copy of the file)."""
        return replace(self, factory=f"{path}:{(self.factory or '').rpartition(':')[2]}")

    @property
    def shape(self) -> tuple[int, int, int]:
        if self.input_shape is not None:
            return self.input_shape
        if self.name == "custom":
            raise ModelError("a custom model needs input_shape: [C, H, W]")
        return (3, self.resolution, self.resolution)


def vgg16(num_classes: int = 1000) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG16_CONFIG:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=False)]
            channels = int(item)
    layers += [
        nn.Flatten(),
        nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(),
        nn.Linear(4096, num_classes),
    ]
    return nn.Sequential(*layers)


def mobilenet_v1(width: float = 1.0, num_classes: int = 1000) -> nn.Sequential:
    """MobileNet-V1 (Howard et al., 2017) with width multiplier `width`."""
    if width not in MOBILENET_WIDTHS:
        raise ModelError(f"MobileNet-V1 width must be one of {MOBILENET_WIDTHS}, got {width}")

    def scaled(c: int) -> int:
        return int(c * width)

    channels = scaled(32)
    layers: list[nn.Module] = [
        nn.Conv2d(3, channels, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(channels), nn.ReLU(),
    ]
    for out, stride in _MOBILENET_BLOCKS:
        out = scaled(out)
        layers += [
            nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU(),
            nn.Conv2d(channels, out, 1, bias=False),
            nn.BatchNorm2d(out), nn.ReLU(),
        ]
        channels = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


CHUNK_VALUES = 1 << 22  # float64 draws at a time when randomising a large layer (32 MB)


def _randomise(module: nn.Module, seed: int) -> None:
    """Fixed-seed weights, with batch-norm statistics that are not the identity, so exactness
    tests exercise every parameter. The same bits on every architecture: the devices of a
    hardware run build their models themselves and must agree with the host bit for bit
    (`model_digest`). So the normal samples are drawn in float64 and rounded to float32: a
    float32 `torch.randn` of 16 or more values takes a vectorised path on x86 with AVX2 whose
    results differ from aarch64's scalar one in the last bit (a third of MobileNet-V1's
    weights, by up to 8e-7), while float64 draws agree (20 million of them, checked on an
    arm64 device under qemu-user against x86-64)."""
    generator = torch.Generator().manual_seed(seed)

    def normal(shape: tuple[int, ...] | torch.Size | int) -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float64)

    def fill_normal(weight: torch.Tensor, scale: float) -> None:
        """`weight` = normal draws x `scale`, drawn a few rows at a time: VGG-16's first
        classifier layer drawn whole took 1.6 GB of float64 (a 2.5 GB peak to build the model,
        more than a 2 GB Pi has). Rows of a multiple of 16 values continue the very stream one
        draw makes (torch fills normals in blocks of 16); other shapes are drawn whole."""
        row = weight[0].numel()
        step = max(1, CHUNK_VALUES // row) if row % 16 == 0 else len(weight)
        for start in range(0, len(weight), step):
            part = weight[start:start + step]
            part.copy_(normal(part.shape) * scale)

    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.Conv2d | nn.Linear):
                fan_in = sub.weight[0].numel()
                fill_normal(sub.weight, (2.0 / fan_in) ** 0.5)
                if sub.bias is not None:
                    sub.bias.copy_(normal(sub.bias.shape) * 0.01)
            elif isinstance(sub, nn.BatchNorm2d):
                n = sub.num_features
                sub.weight.copy_(1.0 + 0.1 * normal(n))
                sub.bias.copy_(0.1 * normal(n))
                assert sub.running_mean is not None and sub.running_var is not None  # tracked
                sub.running_mean.copy_(0.1 * normal(n))
                sub.running_var.copy_(1.0 + 0.1 * torch.rand(n, generator=generator))


def _failure(exc: BaseException) -> str:
    """What a user's code did, in one line: `called exit(3)`, `ValueError: its first line`."""
    if isinstance(exc, SystemExit):
        return f"called exit({exc.code!r})" if exc.code is not None else "called exit()"
    try:
        lines = str(exc).strip().splitlines()
    except Exception:  # a hostile __str__
        lines = []
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _factory_module(factory: str, where: str) -> ModuleType:
    """A module by name from the Python path, or a `.py` file by path (loaded once per path).
    Importing runs the user's code: whatever it raises, or exiting, is one `ModelError`."""
    if not where.endswith(".py"):
        try:
            return importlib.import_module(where)
        except (Exception, SystemExit) as exc:
            raise ModelError(f"custom model factory {factory}: importing {where} failed: "
                             f"{_failure(exc)}") from None
    path = Path(where)
    try:
        checked_file(path, MAX_FACTORY_FILE_BYTES)
    except HalpError as exc:
        raise ModelError(f"custom model factory {factory}: {exc}") from None
    name = "halp_custom_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.parent))  # as when run as a script: it may import its neighbours
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # the user's code: any error is theirs, in one line
        del sys.modules[name]
        raise ModelError(f"custom model factory {factory}: importing {path.name} failed: "
                         f"{_failure(exc)}") from None
    finally:
        sys.path.remove(str(path.parent))
    return module


def _load_factory(factory: str | None) -> nn.Module:
    if not factory or ":" not in factory:
        raise ModelError("a custom model needs factory: 'package.module:function' or "
                         f"'file.py:function', got {factory!r}")
    where, _, attr = factory.rpartition(":")
    fn = getattr(_factory_module(factory, where), attr, None)
    if fn is None:
        raise ModelError(f"custom model factory {factory}: {where!r} has no {attr!r}")
    if not callable(fn):
        raise ModelError(f"custom model factory {factory}: {attr} is a {type(fn).__name__}, "
                         "not a function")
    try:
        built = fn()
    except (Exception, SystemExit) as exc:  # the user's code, as above
        raise ModelError(f"custom model factory {factory} failed: {_failure(exc)}") from None
    if not isinstance(built, nn.Module):
        raise ModelError(f"custom model factory {factory} returned {type(built).__name__}, "
                         "not an nn.Module")
    return built


def build_model(spec: ModelSpec) -> nn.Module:
    """Build the model of `spec` in eval mode with its deterministic weights."""
    if spec.name == "vgg16":
        if spec.resolution != 224:
            raise ModelError(f"VGG-16 takes 224x224 inputs, got resolution {spec.resolution}")
        model: nn.Module = vgg16()
    elif spec.name == "mobilenet_v1":
        if spec.resolution not in MOBILENET_RESOLUTIONS:
            raise ModelError(f"MobileNet-V1 resolution must be one of {MOBILENET_RESOLUTIONS}, "
                             f"got {spec.resolution}")
        model = mobilenet_v1(spec.width)
    elif spec.name in TORCHVISION_MODELS:
        title, build = TORCHVISION_MODELS[spec.name]
        if spec.resolution not in TORCHVISION_RESOLUTIONS:
            raise ModelError(f"{title} resolution must be from {TORCHVISION_RESOLUTIONS.start} "
                             f"to {TORCHVISION_RESOLUTIONS.stop - 1}, got {spec.resolution}")
        if spec.width != 1.0:
            raise ModelError(f"{title} has no width multiplier, got width {spec.width}")
        model = build()
    elif spec.name == "custom":
        model = _load_factory(spec.factory)
    else:
        raise ModelError(f"unknown model {spec.name!r}; known: {', '.join(MODEL_NAMES)}")
    _randomise(model, spec.seed)
    if spec.weights:
        try:
            state = state_dict_of(load_tensor_file(spec.weights), spec.weights)
            state = without_training_only(state, TRAINING_ONLY_PREFIXES.get(spec.name, ()))
            load_state_dict_checked(model, state, spec.weights)
        except HalpError as exc:
            raise ModelError(f"model.weights: {exc}") from None
    return model.eval()


def without_training_only(state: Mapping[str, torch.Tensor],
                          prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """`state` without the keys of training-only parts (those starting with one of `prefixes`):
    torchvision's GoogLeNet saves its auxiliary classifiers, which inference never runs."""
    return {key: value for key, value in state.items() if not key.startswith(prefixes)}


def model_digest(model: nn.Module) -> str:
    """A short digest of every parameter and buffer: equal digests mean identical weights."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]
