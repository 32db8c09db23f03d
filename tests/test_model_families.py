"""ResNet-18/34/50, MobileNet-V2 and GoogLeNet are torchvision's: a state_dict in torchvision's
layout loads into ours unchanged and gives the logits torchvision's own code gave
(tests/data/torchvision_reference.json, written by make_torchvision_reference.py beside it)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
import torch.fx
from model_support import layout_of, load_reference, seeded_input, seeded_state_dict
from torch import nn

from halp.cli import main
from halp.errors import ModelError
from halp.model.zoo import ModelSpec, build_model

REFERENCE = load_reference()
NAMES = ["resnet18", "resnet34", "resnet50", "mobilenet_v2", "googlenet"]

# torchvision's published parameter counts (`num_params` of each model's weights)
PUBLISHED_PARAMS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "mobilenet_v2": 3_504_872, "googlenet": 6_624_904,
}
# torchvision's published GFLOPS at 224x224 (`_ops`, which are multiply-accumulates), for a test
# of the MACs `halp.model.graph` counts once it takes these models (it is being rewritten).
PUBLISHED_GMACS_224 = {
    "resnet18": 1.81, "resnet34": 3.66, "resnet50": 4.09, "mobilenet_v2": 0.30, "googlenet": 1.50,
}


def layout(name: str, part: str = "state_dict") -> list[tuple[str, list[int], str]]:
    return [(key, shape, dtype) for key, shape, dtype in REFERENCE["models"][name][part]]


def torchvision_weights(name: str) -> dict[str, torch.Tensor]:
    """The state_dict torchvision computed the reference logits with, in its key order."""
    return seeded_state_dict(layout(name), REFERENCE["weights_seed"])


@functools.cache
def zoo_model(name: str) -> nn.Module:
    """The zoo's model at the smallest resolution, built once: for the tests that only look."""
    return build_model(ModelSpec(name, resolution=32))


def save(state: dict[str, torch.Tensor], path: Path) -> str:
    torch.save(state, path)
    return str(path)


@pytest.mark.parametrize("name", NAMES)
def test_torchvision_weights_give_torchvision_logits(name, tmp_path):
    resolution = REFERENCE["models"][name]["resolution"]
    weights = save(torchvision_weights(name), tmp_path / f"{name}.pt")
    model = build_model(ModelSpec(name, resolution=resolution, weights=weights))
    with torch.no_grad():
        logits = model(seeded_input(resolution, REFERENCE["input_seed"]))
    expected = torch.tensor([REFERENCE["models"][name]["logits"]])
    assert logits.shape == expected.shape == (1, 1000)
    assert expected.std() > 0.1  # not degenerate: the weights make the classes differ
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4 * expected.abs().max().item())


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_has_torchvisions_keys_shapes_and_dtypes_in_order(name):
    assert layout_of(zoo_model(name).state_dict()) == layout(name)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_is_torchvisions(name):
    assert sum(p.numel() for p in zoo_model(name).parameters()) == PUBLISHED_PARAMS[name]


@pytest.mark.parametrize("name", NAMES)
def test_fx_traces_the_forward_to_one_tensor_with_the_same_output(name):
    model = zoo_model(name)  # at the smallest resolution, which runs too
    traced = torch.fx.symbolic_trace(model)
    x = seeded_input(32)
    with torch.no_grad():
        expected, got = model(x), traced(x)
    assert isinstance(got, torch.Tensor)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("name", NAMES)
def test_the_seed_sets_every_parameter_and_buffer(name):
    a = zoo_model(name).state_dict()  # seed 0
    b = build_model(ModelSpec(name, resolution=32, seed=1)).state_dict()
    same = [key for key in a if not key.endswith("num_batches_tracked")
            and torch.equal(a[key], b[key])]
    assert same == []


def test_a_googlenet_file_with_torchvisions_aux_heads_loads_without_them(tmp_path):
    state = torchvision_weights("googlenet")
    aux = seeded_state_dict(layout("googlenet", "aux_state_dict"), seed=3)
    assert aux and all(key.startswith(("aux1.", "aux2.")) for key in aux)
    model = build_model(ModelSpec("googlenet", weights=save({**state, **aux}, tmp_path / "w.pt")))
    loaded = model.state_dict()
    assert list(loaded) == list(state)  # no aux keys
    assert all(torch.equal(loaded[key], value) for key, value in state.items())


@pytest.mark.parametrize("name,extra", [
    ("googlenet", "aux3.fc.weight"),  # only aux1. and aux2. are training-only
    ("googlenet", "aux1"),  # a prefix is a module's, with its dot
    ("resnet18", "aux1.fc2.weight"),  # and only GoogLeNet's
])
def test_other_extra_keys_are_refused(name, extra, tmp_path):
    state = {**torchvision_weights(name), extra: torch.zeros(3)}
    with pytest.raises(ModelError, match=rf"1 unexpected \(first: '{extra}'\)") as err:
        build_model(ModelSpec(name, weights=save(state, tmp_path / "w.pt")))
    assert "\n" not in str(err.value)


def test_a_file_with_a_wrong_key_is_refused_in_one_line(tmp_path):
    state = torchvision_weights("mobilenet_v2")
    state["classifier.0.weight"] = state.pop("classifier.1.weight")
    with pytest.raises(ModelError, match=r"model.weights: .*w.pt: does not fit the model: "
                       r"1 key\(s\) missing \(first: 'classifier.1.weight'\), "
                       r"1 unexpected \(first: 'classifier.0.weight'\)") as err:
        build_model(ModelSpec("mobilenet_v2", weights=save(state, tmp_path / "w.pt")))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("spec,match", [
    (ModelSpec("resnet18", resolution=31), "ResNet-18 resolution must be from 32 to 1024, got 31"),
    (ModelSpec("googlenet", resolution=1025), "GoogLeNet resolution must be from 32 to 1024"),
    (ModelSpec("mobilenet_v2", width=0.5), "MobileNet-V2 has no width multiplier"),
])
def test_a_bad_spec_is_refused_naming_what_is_wrong(spec, match):
    with pytest.raises(ModelError, match=match):
        build_model(spec)


def test_the_variant_names_a_resolution_other_than_224():
    assert ModelSpec("resnet50").variant == "resnet50"
    assert ModelSpec("googlenet", resolution=160).variant == "googlenet_160"
    assert build_model(ModelSpec("mobilenet_v2", resolution=1024)) is not None  # the largest


@pytest.mark.parametrize("name", sorted(PUBLISHED_GMACS_224))
def test_halp_model_reports_torchvisions_macs_and_parameters(name, capsys):
    """`halp model NAME --json`: the traced graph's counts, as torchvision publishes them
    (GFLOPS there are multiply-accumulates, to two decimals)."""
    assert main(["model", name, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)

    assert round(report["macs"] / 1e9, 2) == PUBLISHED_GMACS_224[name]
    assert report["params"] == PUBLISHED_PARAMS[name]
