"""`halp profile` end to end: the arguments it refuses, and the profile it measures and writes."""

from __future__ import annotations

import argparse

import pytest
import yaml

from halp.cli import profile_cmd
from halp.errors import HalpError
from halp.latency.probe import LAYERS, probe_machine, slowdowns
from halp.latency.profile import profile_from_dict


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    profile_cmd.add_parser(parser.add_subparsers())
    return parser.parse_args(["profile", *argv])


@pytest.mark.parametrize("argv, message", [
    (("--model", "resnet99"), "vgg16, mobilenet_v1, resnet18, resnet34, resnet50, mobilenet_v2 or googlenet"),
    (("--model", "custom"), "profile with zoo models"),
    (("--model", "mobilenet_v1", "--width", "0.3"), "MobileNet-V1 widths"),
    (("--model", "mobilenet_v1", "--resolution", "abc"), "comma-separated numbers"),
])
def test_halp_profile_refuses_bad_arguments_saying_what_is_allowed(tmp_path, argv, message):
    with pytest.raises(HalpError, match=message):
        profile_cmd.run(parse(*argv, "--out", str(tmp_path / "p.yaml")))


def test_cli_quick_profile_writes_a_loadable_file(tmp_path):
    out = tmp_path / "quick.yaml"
    args = parse("--model", "mobilenet_v1", "--width", "0.25", "--resolution", "128", "--quick",
                 "--repeats", "2", "--out", str(out))

    assert profile_cmd.run(args) == 0

    profile = profile_from_dict(yaml.safe_load(out.read_text()), str(out))
    assert profile.name == "quick"
    assert profile.provenance["kind"] == "measured"
    assert profile.provenance["models"] == ["0.25_128"]
    assert "--quick" in profile.provenance["command"]
    assert profile.message_overhead_s > 0 and profile.copy_s_per_byte > 0
    # The machine it describes: a probe, which this same machine matches a moment later
    # (loosely: the test suite may be busy beside it).
    assert set(profile.provenance["probe"]) == set(LAYERS)
    ratios = slowdowns(profile.provenance["probe"], probe_machine(repeats=5))
    assert set(ratios) == set(LAYERS) and all(0.5 < r < 2.0 for r in ratios.values()), ratios


def test_model_names_are_zoo_models_each_once_in_order():
    specs = profile_cmd.model_specs("resnet18, googlenet,mobilenet_v1,resnet18,mobilenet_v2,resnet34,resnet50,vgg16",
                                    (1.0, 0.25), (128,))
    assert [s.variant for s in specs] == ["resnet18", "googlenet", "1.0_128", "0.25_128", "mobilenet_v2",
                                          "resnet34", "resnet50", "vgg16"]


def test_cli_quick_profile_of_a_residual_network_fits_its_merges(tmp_path):
    out = tmp_path / "resnet.yaml"
    assert profile_cmd.run(parse("--model", "resnet18", "--quick", "--repeats", "1", "--out", str(out))) == 0

    profile = profile_from_dict(yaml.safe_load(out.read_text()), str(out))
    assert profile.provenance["models"] == ["resnet18"]
    assert profile.provenance["command"].startswith("halp profile --model resnet18 --out")
    assert {"conv", "pool", "elementwise", "linear", "merge"} <= set(profile.coefficients)
    assert profile.held_out_mape is not None


def test_cli_derivation_needs_the_assumed_time(tmp_path):
    with pytest.raises(HalpError, match="--vgg16-s"):
        profile_cmd.run(parse("--derive-from", "this-machine", "--out", str(tmp_path / "d.yaml")))
