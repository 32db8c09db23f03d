"""A profile fitted on a tiny real conv net's timed ops: what it holds, and how well it predicts."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from latency_support import tiny_graph, tiny_samples

from halp.latency.profile import FEATURES, profile_from_dict
from halp.latency.profile_fit import fit_profile
from halp.latency.profile_io import write_profile
from halp.model.graph import ModelGraph


@pytest.fixture(scope="module")
def graph() -> ModelGraph:
    return tiny_graph()


@pytest.fixture(scope="module")
def samples(graph):
    return tiny_samples(graph)


def test_profile_of_a_tiny_model_loads_back_with_non_negative_coefficients(samples, tmp_path):
    profile = fit_profile(samples, "tiny", copy_s_per_byte=1e-10, message_overhead_s=2e-5,
                          provenance={"kind": "measured", "cpu": "test"})

    path = write_profile(profile, tmp_path / "tiny.yaml")
    text = path.read_text()
    loaded = profile_from_dict(yaml.safe_load(text), str(path))

    assert text.startswith("# ")
    assert loaded.coefficients == profile.coefficients
    assert {"conv", "dwconv", "pool", "elementwise", "linear"} <= set(loaded.coefficients)
    assert all(v >= 0 for coef in loaded.coefficients.values() for v in coef.values())
    assert all(name in FEATURES for coef in loaded.coefficients.values() for name in coef)
    assert loaded.op_overhead_s >= 0
    assert loaded.held_out_mape is not None and loaded.held_out_mape >= 0
    assert loaded.provenance["held_out"]["ops"] > 0


def test_profile_predicts_the_measured_ops_of_the_tiny_model(samples, graph):
    profile = fit_profile(samples, "tiny")

    def predict(s):
        out = graph.rows(s.stop, *s.rows)
        return profile.op_overhead_s + sum(profile.layer_s(layer, held, produced)
                                           for layer, held, produced in graph.layer_regions(s.start, s.stop, out))

    predicted = np.array([predict(s) for s in samples])
    measured = np.array([s.seconds for s in samples])
    # Loose, but a profile that ignored the ops' sizes would fail both.
    assert np.mean(np.abs(predicted - measured) / measured) < 0.5
    assert np.corrcoef(np.argsort(np.argsort(predicted)), np.argsort(np.argsort(measured)))[0, 1] > 0.8
    # A bigger slice of the same fused run is predicted to take longer.
    first_conv_run = [s for s in samples if s.start == 0 and s.stop == 4]
    by_rows = sorted(first_conv_run, key=lambda s: s.rows[1] - s.rows[0])
    assert len(by_rows) == 3
    assert predict(by_rows[0]) < predict(by_rows[1]) < predict(by_rows[2])
