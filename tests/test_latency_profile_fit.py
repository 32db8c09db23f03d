"""A profile fitted on a tiny real conv net's timed ops: what it holds, and how well it predicts."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import yaml
from latency_support import tiny_dag_graph, tiny_dag_samples, tiny_graph, tiny_samples

from halp.latency.profile import FEATURES, profile_from_dict
from halp.latency.profile_fit import fit_profile
from halp.latency.profile_io import write_profile
from halp.model.graph import ModelGraph, region


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


@pytest.fixture(scope="module")
def dag() -> ModelGraph:
    return tiny_dag_graph()


@pytest.fixture(scope="module")
def dag_samples(dag):
    return tiny_dag_samples(dag)


def predict(profile, graph, s) -> float:
    """A sample's prediction: its ops on the regions it ran them on, plus the op overhead."""
    if s.node is None:
        triples = graph.layer_regions(s.start, s.stop, graph.rows(s.stop, *s.rows))
    else:
        op = graph.layers[s.start].nodes[s.node].spec
        out = region(s.rows, (0, op.out_width))
        triples = [(op, op.needed(out), out)]
    return profile.op_overhead_s + sum(profile.layer_s(*t) for t in triples)


def test_a_profile_of_a_dag_fits_merges_as_a_kind_of_their_own(dag, dag_samples, tmp_path):
    profile = fit_profile(dag_samples, "dag")
    loaded = profile_from_dict(yaml.safe_load(write_profile(profile, tmp_path / "dag.yaml").read_text()),
                               str(tmp_path / "dag.yaml"))

    assert {"conv", "pool", "elementwise", "linear", "merge"} <= set(loaded.coefficients)
    assert loaded.coefficients == profile.coefficients
    merges = [s for s in dag_samples if s.kind == "merge"]
    assert merges and all(not s.fused for s in merges)  # never held out
    # Loose, as above: the merges alone, and every op.
    for group in (merges, dag_samples):
        predicted = np.array([predict(loaded, dag, s) for s in group])
        measured = np.array([s.seconds for s in group])
        assert np.mean(np.abs(predicted - measured) / measured) < 0.5


def test_a_profile_of_chain_models_has_no_merge_kind_and_predicts_merges_as_elementwise(samples, dag):
    profile = fit_profile(samples, "chain")
    assert "merge" not in profile.coefficients
    block = next(layer for layer in dag.layers if layer.nodes)
    merge = next(n.spec for n in block.nodes if n.spec.kind == "merge")
    full = dag.full(block.index + 1)
    assert profile.layer_s(merge, full, full) == profile.layer_s(replace(merge, kind="elementwise"), full, full) > 0
