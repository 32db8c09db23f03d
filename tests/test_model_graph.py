"""Receptive-field arithmetic: slices computed from `rows_needed` equal the whole map's rows."""

from __future__ import annotations

import torch
from hypothesis import given, reject, settings
from hypothesis import strategies as st
from torch import nn

from halp.errors import ModelError
from halp.model.graph import region
from halp.model.slicing import assemble, run_region
from halp.model.trace import trace_model


def chain(draw_layers, channels: int = 3):
    layers: list[nn.Module] = []
    c = channels
    for kind, k, s, p, out in draw_layers:
        if kind == "conv":
            layers += [nn.Conv2d(c, out, k, stride=s, padding=min(p, k // 2)), nn.ReLU()]
            c = out
        elif kind == "dw":
            layers += [nn.Conv2d(c, c, k, stride=s, padding=min(p, k // 2), groups=c), nn.BatchNorm2d(c)]
        elif kind == "max":
            layers.append(nn.MaxPool2d(k, stride=s, padding=min(p, k // 2)))
        else:
            layers.append(nn.AvgPool2d(k, stride=s, padding=min(p, k // 2)))
    return nn.Sequential(*layers)


layer_strategy = st.tuples(st.sampled_from(["conv", "dw", "max", "avg"]), st.integers(1, 5),
                           st.integers(1, 3), st.integers(0, 2), st.integers(1, 6))


def random_model(layers, size):
    torch.manual_seed(0)
    model = chain(layers).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    return model, trace_model(model, (3, size, size))


def sliceable_model(layers, size):
    """`random_model` for a hypothesis example, which is rejected where the random chain shrinks
    the map to nothing: the one refusal such a chain may meet. Any other error fails the test."""
    try:
        return random_model(layers, size)
    except ModelError as exc:
        if "too small" in str(exc):
            reject()
        raise


@settings(max_examples=60, deadline=None)
@given(st.lists(layer_strategy, min_size=1, max_size=5), st.integers(12, 40), st.data())
def test_any_row_slice_equals_the_whole(layers, size, data):
    model, graph = sliceable_model(layers, size)
    end = len(graph)
    height = graph.height(end)
    r0 = data.draw(st.integers(0, height - 1))
    r1 = data.draw(st.integers(r0 + 1, height))
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        whole = model(x)
    out = graph.rows(end, r0, r1)
    need = graph.rows_needed(0, end, out)
    piece = run_region(graph, 0, end, x[:, :, need.rows.start:need.rows.stop], need, out)
    torch.testing.assert_close(piece, whole[:, :, r0:r1], rtol=1e-5, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(st.lists(layer_strategy, min_size=1, max_size=5), st.integers(12, 40), st.data())
def test_computable_rows_need_only_the_block_and_are_maximal(layers, size, data):
    _, graph = sliceable_model(layers, size)
    end = len(graph)
    x0 = data.draw(st.integers(0, size - 1))
    x1 = data.draw(st.integers(x0 + 1, size))
    held = graph.rows(0, x0, x1)
    out = graph.computable(0, end, held)
    if out.empty:  # a block too thin for any output row: not one of them fits in it
        assert not any(held.contains(graph.rows_needed(0, end, graph.rows(end, r, r + 1)))
                       for r in range(graph.height(end)))
        return
    assert held.contains(graph.rows_needed(0, end, out))
    # Maximal: one more row on either side would need rows outside the block.
    if out.rows.start > 0:
        wider = graph.rows(end, out.rows.start - 1, out.rows.stop)
        assert not held.contains(graph.rows_needed(0, end, wider))
    if out.rows.stop < graph.height(end):
        wider = graph.rows(end, out.rows.start, out.rows.stop + 1)
        assert not held.contains(graph.rows_needed(0, end, wider))


def test_a_two_dimensional_tile_equals_that_tile_of_the_whole_output():
    model, graph = random_model([("conv", 3, 1, 1, 4), ("max", 2, 2, 0, 0), ("conv", 3, 2, 1, 5)], 24)
    x = torch.randn(1, 3, 24, 24)
    whole = model(x).detach()
    end = len(graph)
    tile = region((1, 3), (2, 6))
    need = graph.rows_needed(0, end, tile)
    got = run_region(graph, 0, end, x[:, :, need.rows.start:need.rows.stop, need.cols.start:need.cols.stop],
                     need, tile)
    torch.testing.assert_close(got, whole[:, :, 1:3, 2:6])


def test_vgg_row_after_two_convolutions_needs_five_input_rows():
    from halp.model.zoo import ModelSpec, build_model
    graph = trace_model(build_model(ModelSpec("vgg16")), (3, 224, 224))
    one_row = graph.rows(4, 50, 51)
    # Two 3x3 convolutions: one output row reads five input rows.
    assert graph.rows_needed(0, 4, one_row).rows.size == 5
    assert graph.cut_points()[0] == 0 and graph.cut_points()[-1] == graph.spatial_end


def test_a_linear_layer_computes_any_range_of_its_features():
    """A flat map's rows are its features: each one reads the whole input and its own weights."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                          nn.Linear(16, 10), nn.ReLU(), nn.Linear(10, 6)).eval()
    graph = trace_model(model, (3, 8, 8))
    x = torch.randn(1, 3, 8, 8)
    whole = model(x).detach()
    end, flat = len(graph), 3  # boundary 3: the flat map of 16 features
    assert graph.height(flat) == 16 and graph.region_bytes(flat, graph.rows(flat, 4, 9)) == 5 * 4
    features = model[:3](x).detach()
    pieces = []
    for rows in [(0, 2), (2, 5), (5, 10)]:  # the first linear layer and its ReLU, by features
        out = graph.rows(5, *rows)
        assert graph.rows_needed(flat, 5, out) == graph.full(flat)
        got = run_region(graph, flat, 5, features, graph.full(flat), out)
        torch.testing.assert_close(got, torch.relu(model[3](features))[:, rows[0]:rows[1]])
        pieces.append((out, got))
    hidden = assemble(graph.full(5), pieces)
    got = run_region(graph, 5, end, hidden, graph.full(5), graph.rows(end, 1, 4))
    torch.testing.assert_close(got, whole[:, 1:4])
    # Cost: a third of the features is about a third of the layer's operations.
    assert graph.flops(flat, 4, graph.rows(4, 0, 5)) * 2 == graph.flops(flat, 4, graph.full(4))
