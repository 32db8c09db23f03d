"""The zoo's models agree with their published counts, and build deterministically."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from halp.errors import ModelError
from halp.model.graph import ModelGraph
from halp.model.trace import trace_model
from halp.model.zoo import ModelSpec, build_model, model_digest

# MobileNet-V1 paper (Howard et al., 2017), tables 6 and 7: million MACs and parameters.
PUBLISHED_MOBILENET = {
    (1.0, 224): (569, 4.2), (0.75, 224): (325, 2.6), (0.5, 224): (149, 1.3), (0.25, 224): (41, 0.5),
    (1.0, 192): (418, 4.2), (1.0, 160): (290, 4.2), (1.0, 128): (186, 4.2),
}


def graph_of(spec: ModelSpec) -> ModelGraph:
    return trace_model(build_model(spec), spec.shape, spec.variant)


@pytest.mark.parametrize("width,resolution", sorted(PUBLISHED_MOBILENET))
def test_mobilenet_counts_match_the_paper(width, resolution):
    graph = graph_of(ModelSpec("mobilenet_v1", width, resolution))
    macs, params = PUBLISHED_MOBILENET[(width, resolution)]
    assert graph.macs / 1e6 == pytest.approx(macs, rel=0.01)
    assert graph.params / 1e6 == pytest.approx(params, abs=0.06)


def test_mobilenet_1_224_has_the_reference_parameter_count():
    # Conv and FC weights plus batch-norm scale and shift: the reference implementation's count.
    assert graph_of(ModelSpec("mobilenet_v1")).params == 4_231_976


def test_vgg16_counts_match_the_published_parameters_and_macs():
    graph = graph_of(ModelSpec("vgg16"))
    assert graph.params == 138_357_544
    assert graph.macs / 1e9 == pytest.approx(15.47, abs=0.01)


@pytest.mark.parametrize("width", [1.0, 0.75, 0.5, 0.25])
@pytest.mark.parametrize("resolution", [224, 192, 160, 128])
def test_all_sixteen_variants_output_1000_classes_and_scale_with_resolution(width, resolution):
    spec = ModelSpec("mobilenet_v1", width, resolution)
    model = build_model(spec)
    out = model(torch.randn(1, *spec.shape))
    assert out.shape == (1, 1000)
    # MACs scale with the square of the resolution (the classifier aside).
    ratio = graph_of(spec).macs / graph_of(ModelSpec("mobilenet_v1", width, 224)).macs
    assert ratio == pytest.approx((resolution / 224) ** 2, rel=0.05)


def test_same_seed_same_weights_other_seed_other_weights():
    a = model_digest(build_model(ModelSpec("mobilenet_v1", 0.25, 128, seed=1)))
    b = model_digest(build_model(ModelSpec("mobilenet_v1", 0.25, 128, seed=1)))
    c = model_digest(build_model(ModelSpec("mobilenet_v1", 0.25, 128, seed=2)))
    assert a == b != c


def test_a_weights_file_overrides_the_seeds_weights(tmp_path):
    spec = ModelSpec("mobilenet_v1", 0.25, 128, seed=5)
    torch.save(build_model(spec).state_dict(), tmp_path / "w.pt")
    loaded = build_model(ModelSpec("mobilenet_v1", 0.25, 128, seed=9, weights=str(tmp_path / "w.pt")))
    assert model_digest(loaded) == model_digest(build_model(spec))


def test_bad_weights_file_is_a_clear_error(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a torch.save file"):
        build_model(ModelSpec("mobilenet_v1", 0.25, 128, weights=str(tmp_path / "w.pt")))


@pytest.mark.parametrize("spec,match", [
    (ModelSpec("resnet"), "unknown model"),
    (ModelSpec("mobilenet_v1", 0.3), "width"),
    (ModelSpec("mobilenet_v1", 1.0, 100), "resolution"),
    (ModelSpec("vgg16", resolution=160), "224"),
])
def test_a_bad_spec_is_refused_naming_what_is_wrong(spec, match):
    with pytest.raises(ModelError, match=match):
        build_model(spec)


NET = """\
from torch import nn
from userparts import CHANNELS  # a neighbour, as a script would import it

def build():
    return nn.Sequential(nn.Conv2d(3, CHANNELS, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(CHANNELS, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 4))

def broken():
    raise RuntimeError("no such layer")

def not_a_model():
    return 42
"""


def write_net(folder) -> None:
    (folder / "usernet.py").write_text(NET)
    (folder / "userparts.py").write_text("CHANNELS = 6\n")


def custom(factory: str) -> ModelSpec:
    return ModelSpec("custom", resolution=16, factory=factory, input_shape=(3, 16, 16))


def test_a_custom_model_comes_from_a_file_or_a_module(tmp_path, monkeypatch):
    write_net(tmp_path)
    from_file = build_model(custom(f"{tmp_path / 'usernet.py'}:build"))
    monkeypatch.syspath_prepend(str(tmp_path))
    from_module = build_model(custom("usernet:build"))
    assert model_digest(from_file) == model_digest(from_module)  # same seed, same weights
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(from_file(x), from_module(x))


@pytest.mark.parametrize("factory,match", [
    ("usernet.py:broken", "broken failed: RuntimeError: no such layer"),
    ("usernet.py:not_a_model", "returned int, not an nn.Module"),
    ("usernet.py:absent", "has no 'absent'"),
    ("missing.py:build", "missing.py: no such file"),
    ("no_such_module_here:build", "importing no_such_module_here failed: ModuleNotFoundError"),
    ("usernet.py", "needs factory"),
])
def test_a_bad_custom_model_is_one_clear_error(tmp_path, monkeypatch, factory, match):
    write_net(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match=match) as err:
        build_model(custom(factory))
    assert "\n" not in str(err.value)


def test_an_unsupported_layer_is_refused_naming_its_index_and_type():
    with pytest.raises(ModelError, match=r"\b1 \(LSTM\): this layer cannot be split"):
        trace_model(nn.Sequential(nn.Conv2d(3, 4, 3), nn.LSTM(4, 4)), (3, 8, 8))


def test_halp_model_json_reports_the_graphs_macs_params_and_layers():
    result = subprocess.run([sys.executable, "-m", "halp.cli", "model", "mobilenet_v1", "--width", "0.5",
                             "--resolution", "160", "--json"], capture_output=True, text=True, check=True)
    data = json.loads(result.stdout)
    assert data["macs"] == graph_of(ModelSpec("mobilenet_v1", 0.5, 160)).macs
    assert data["params"] > 0 and data["layers"] == 84


def test_large_layers_are_randomised_a_few_rows_at_a_time_with_the_same_bits(monkeypatch):
    """Drawing VGG-16's classifier whole took 1.6 GB of float64; in chunks it must still be
    the very same weights (devices agree with the host bit for bit)."""
    import halp.model.zoo as zoo

    def weights(chunk: int) -> dict[str, torch.Tensor]:
        monkeypatch.setattr(zoo, "CHUNK_VALUES", chunk)
        module = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Flatten(), nn.Linear(64, 48),
                               nn.Linear(48, 33))  # rows of 27, 64 and 48 values
        zoo._randomise(module, seed=4)
        return {k: v.clone() for k, v in module.state_dict().items()}

    whole, chunked = weights(1 << 30), weights(100)  # 100 values: one or two rows at a time

    assert whole.keys() == chunked.keys()
    assert all(torch.equal(whole[k], chunked[k]) for k in whole)
