"""Writes tests/data/torchvision_reference.json: what torchvision's own ResNet-18/34/50,
MobileNet-V2 and GoogLeNet compute, for tests/test_model_families.py to hold ours against.

A dev-time script, run by hand once per torchvision release; the tests only read its output.
The project does not depend on torchvision, and its wheel cannot be imported beside the CPU
torch (its compiled ops link CUDA). Only the three model source files are needed, so download
the wheel matching the project's torch, unzip it, and point this script at it:

    pip download torchvision==0.28.0 --no-deps -d /tmp/tvref
    python -m zipfile -e /tmp/tvref/torchvision-0.28.0-*.whl /tmp/tvref/unpacked
    PYTHONPATH=. python tests/data/make_torchvision_reference.py /tmp/tvref/unpacked

`torchvision`, `torchvision.models`, `torchvision.ops` and `torchvision.transforms` are made
empty packages over the wheel's folders, so that their `__init__` (which loads the compiled
ops) never runs, and `torchvision.transforms._presets` a stub (only the weights' metadata
names it). Everything else those files import is torchvision's own code, unchanged.

For each model the fixture holds torchvision's state_dict layout (keys in order, shapes,
dtypes) and its logits on `model_support.seeded_input` with the weights of
`model_support.seeded_state_dict`, rounded to 7 significant digits; for GoogLeNet also the
layout of the auxiliary classifiers a model built with them (`aux_logits=True`) saves.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from model_support import (  # noqa: E402  (the tests folder is not a package)
    INPUT_SEED,
    REFERENCE,
    WEIGHTS_SEED,
    layout_of,
    seeded_input,
    seeded_state_dict,
)

# name: (torchvision module, its builder's keyword arguments, resolution of the reference)
MODELS: dict[str, tuple[str, dict[str, Any], int]] = {
    "resnet18": ("resnet", {}, 64),
    "resnet34": ("resnet", {}, 64),
    "resnet50": ("resnet", {}, 64),
    "mobilenet_v2": ("mobilenetv2", {}, 64),
    # torchvision's pretrained GoogLeNet in eval mode: no aux heads, no input transform
    "googlenet": ("googlenet", {"aux_logits": False, "init_weights": False,
                                "transform_input": False}, 96),
}


def import_torchvision_models(wheel: Path) -> None:
    """Make `torchvision.models.<x>` importable from the unpacked wheel without running
    torchvision's package `__init__`s."""
    root = wheel / "torchvision"
    for name, folder in [("torchvision", root), ("torchvision.models", root / "models"),
                         ("torchvision.ops", root / "ops"),
                         ("torchvision.transforms", root / "transforms")]:
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        sys.modules[name] = package
    presets = types.ModuleType("torchvision.transforms._presets")

    class ImageClassification:  # named by the pretrained weights' metadata only
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

    presets.ImageClassification = ImageClassification  # type: ignore[attr-defined]
    sys.modules[presets.__name__] = presets


def torchvision_version(wheel: Path) -> str:
    text = (wheel / "torchvision" / "version.py").read_text()
    found = re.search(r"__version__ = '([^']+)'", text)
    return found.group(1) if found else "unknown"


def build(name: str, **kwargs: Any) -> nn.Module:
    module_name, defaults, _ = MODELS[name]
    module = importlib.import_module(f"torchvision.models.{module_name}")
    return getattr(module, name)(weights=None, **{**defaults, **kwargs})


def reference(name: str) -> dict[str, Any]:
    model = build(name)
    layout = layout_of(model.state_dict())
    model.load_state_dict(seeded_state_dict(layout))
    model.eval()
    resolution = MODELS[name][2]
    with torch.no_grad():
        logits = model(seeded_input(resolution))
    assert logits.shape == (1, 1000), logits.shape
    entry: dict[str, Any] = {
        "resolution": resolution,
        "state_dict": layout,
        "logits": [float(f"{v:.7g}") for v in logits[0].tolist()],
    }
    if name == "googlenet":
        with_aux = layout_of(build(name, aux_logits=True).state_dict())
        entry["aux_state_dict"] = [e for e in with_aux if e[0].startswith(("aux1.", "aux2."))]
        assert [e for e in with_aux if not e[0].startswith(("aux1.", "aux2."))] == layout
    return entry


def dumped(data: dict[str, Any]) -> str:
    """JSON with one state_dict entry a line and each model's logits on one line: small, and
    a new torchvision release's changes read as a diff."""
    lines = ["{"]
    for key in ("torchvision", "torch", "weights_seed", "input_seed"):
        lines.append(f"  {json.dumps(key)}: {json.dumps(data[key])},")
    lines.append('  "models": {')
    for i, (name, entry) in enumerate(data["models"].items()):
        lines.append(f"    {json.dumps(name)}: {{")
        lines.append(f'      "resolution": {entry["resolution"]},')
        for part in ("state_dict", "aux_state_dict"):
            if part in entry:
                rows = ",\n".join(f"        {json.dumps(e)}" for e in entry[part])
                lines.append(f'      "{part}": [\n{rows}\n      ],')
        lines.append(f'      "logits": {json.dumps(entry["logits"])}')
        lines.append("    }" + ("," if i < len(data["models"]) - 1 else ""))
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path, help="the unpacked torchvision wheel (holds torchvision/)")
    args = parser.parse_args()
    import_torchvision_models(args.wheel)
    data = {
        "torchvision": torchvision_version(args.wheel),
        "torch": torch.__version__,
        "weights_seed": WEIGHTS_SEED,
        "input_seed": INPUT_SEED,
        "models": {name: reference(name) for name in MODELS},
    }
    text = dumped(data)
    assert json.loads(text) == json.loads(json.dumps(data))  # the hand layout is the same JSON
    REFERENCE.write_text(text)
    print(f"wrote {REFERENCE} ({len(text) // 1024} KiB, torchvision {data['torchvision']})")


if __name__ == "__main__":
    main()
