"""Files written by `torch.save` (a model's weights, a trained policy), read without running code.

`torch.load(weights_only=True)` refuses a pickled object that is not tensor data, but says so
in a page of text that ends by suggesting `weights_only=False`, which would run the file's code.
Here a refusal is one line naming the file and what is wrong with it; `weights_only=True` is
the only way a file is read, and nothing else in the project calls `torch.load`.
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from halp.errors import HalpError
from halp.userfiles import GB, checked_file

MAX_TENSOR_FILE_BYTES = 4 * GB  # VGG-16's weights are 0.55 GB


def load_tensor_file(path: str | Path, max_bytes: int = MAX_TENSOR_FILE_BYTES) -> Any:
    """What a `torch.save` file holds (tensors, and dicts, lists and numbers of them), on the CPU.
    A file that is missing, a directory, too large, truncated, not written by `torch.save`, or
    holding any other pickled object is a `HalpError` naming it."""
    checked_file(path, max_bytes)
    try:
        with warnings.catch_warnings():  # torch warns on stderr about unusual pickles
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found:
            raise HalpError(f"{path}: holds a pickled {found.group(1)}, not tensors; refused "
                            "(a file's code is never run)") from None
        raise HalpError(f"{path}: not a torch.save file of tensors (it is not a pickle, or "
                        "holds objects of other kinds); refused") from None
    except EOFError:
        raise HalpError(f"{path}: not a torch.save file: empty, or truncated") from None
    except RuntimeError as exc:  # torch's zip reader
        raise HalpError(f"{path}: not a torch.save file, or a truncated one "
                        f"({_first_line(exc)})") from None
    except Exception as exc:  # the unpickler meets junk in many ways (KeyError, IndexError...)
        raise HalpError(f"{path}: not a torch.save file ({type(exc).__name__}: "
                        f"{_first_line(exc)})") from None


def state_dict_of(data: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """`data` as a state_dict (parameter names to tensors), or a `HalpError` saying what it is."""
    if isinstance(data, torch.Tensor):
        raise HalpError(f"{path}: holds one tensor of shape {_shape(data)}, not a state_dict "
                        "(save model.state_dict())")
    if not isinstance(data, Mapping):
        raise HalpError(f"{path}: holds a {type(data).__name__}, not a state_dict "
                        "(save model.state_dict())")
    for key, value in data.items():
        if not isinstance(key, str):
            raise HalpError(f"{path}: key {key!r} is not a parameter name; not a state_dict")
        if not isinstance(value, torch.Tensor):
            hint = (" (a checkpoint? save its state_dict alone)"
                    if isinstance(value, Mapping) else "")
            raise HalpError(f"{path}: {key!r} holds a {type(value).__name__}, not a tensor; "
                            f"not a state_dict{hint}")
    return dict(data)


def load_state_dict_checked(module: nn.Module, state: Mapping[str, torch.Tensor],
                            path: str | Path) -> None:
    """Load `state` into `module` when its names and shapes are exactly the module's; else a
    `HalpError` naming the first missing and the first unexpected key, or the first key whose
    shape differs, with both shapes."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} key(s) missing (first: {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {unexpected[0]!r})")
        raise HalpError(f"{path}: does not fit the model: {', '.join(parts)}; the model has "
                        f"{len(expected)} keys")
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise HalpError(f"{path}: {key!r} has shape {_shape(state[key])} in the file, but "
                            f"{_shape(tensor)} in the model")
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as exc:  # e.g. a dtype that cannot be copied
        raise HalpError(f"{path}: cannot load into the model ({_first_line(exc)})") from None


def _shape(tensor: torch.Tensor) -> str:
    return str(list(tensor.shape))


def _first_line(exc: BaseException) -> str:
    """The first sentence of an error: torch's go on for a paragraph."""
    lines = str(exc).strip().splitlines()
    return lines[0].split(". ")[0][:200] if lines else type(exc).__name__
