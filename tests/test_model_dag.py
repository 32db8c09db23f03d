"""DAG models (residual, inception, dense, fire and shuffle blocks) are planned and computed
exactly by every planner, and a model the testbed cannot split is refused in one line naming
where it is and the op."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dag_support import (
    DAG,
    DENSENET,
    METHODS,
    REFUSALS,
    REFUSED,
    SEQUENTIAL_SKIPS,
    SIZE,
    SPLITTING,
    SQUEEZENET,
    boundary_maps,
    random_shares,
    traced_dag,
    write_factory,
    write_scenario,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from halp.cli import main
from halp.errors import ModelError
from halp.execute import max_error
from halp.methods import halp as halp_method
from halp.methods import make_plan, plan_for, prepare_reusing
from halp.model.graph import BLOCK, region
from halp.model.slicing import crop, run_region
from halp.model.trace import trace_model
from halp.model.zoo import ModelSpec, build_model
from halp.plan import Compute, Plan, validate
from halp.scenario import DeepthingsMethod, HalpMethod, ModnnMethod, load_scenario

from support import cluster

TOLERANCE = 1e-4  # relative to the largest output magnitude, as `halp verify` judges
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Maps this small gain nothing from torch's second thread, which on a busy two-vCPU
    machine spends most of the time waiting for the other."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def verify(plan, prepared) -> float:
    """The plan's largest error relative to the largest output magnitude."""
    error, scale = max_error(plan, prepared.graph, prepared.model)
    return error / max(scale, 1e-30)


def plan_of(scenario_path, method: str):
    """The plan `method` (a name of `METHODS`) makes for the scenario, through `make_plan`."""
    scenario = load_scenario(scenario_path)
    prepared = prepare_reusing(scenario)
    options: dict[str, object] = {"name": method}
    if method == "deepthings-fused":  # tiles through every block, not only the first layers
        options = {"name": "deepthings", "fused_layers": prepared.graph.spatial_end}
    scenario = scenario.with_values({"method": options})
    return make_plan(scenario, prepared), prepared


def shares_a_block(plan: Plan, prepared) -> bool:
    """Some secondary computes part of a block stage's map (not all of it)."""
    graph = prepared.graph
    return any(isinstance(op, Compute) and op.device != plan.host
               and op.out.rows.size < graph.height(op.stop)
               and any(layer.kind == BLOCK for layer in graph.layers[op.start:op.stop])
               for op in plan.ops)


# ---- 1. the zoo's DAG models, every planner ---------------------------------------------------
ZOO = {"resnet18": 96, "resnet50": 72, "mobilenet_v2": 96, "googlenet": 88}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("devices", [2, 3])
@pytest.mark.parametrize("name", list(ZOO))
def test_every_planner_is_exact_on_the_zoo_dag_models(tmp_path, name, devices, method):
    path = write_scenario(tmp_path, f"{{name: {name}, resolution: {ZOO[name]}}}", devices)
    plan, prepared = plan_of(path, method)
    assert any(layer.kind == BLOCK for layer in prepared.graph.layers)
    # HALP shares these models' blocks on two devices; on three it may hand all to the fast one
    if method in SPLITTING or (method == "halp" and devices == 2):
        assert shares_a_block(plan, prepared), str(plan)
    assert verify(plan, prepared) <= TOLERANCE


# ---- 2. DenseNet and SqueezeNet as factory files ------------------------------------------------
CUSTOM = {"densenet": (DENSENET, 48), "squeezenet": (SQUEEZENET, 66)}


def custom_scenario(folder, name: str, source: str, size: int, devices: int):
    factory = write_factory(folder, source, name)
    model = f"{{name: custom, factory: '{factory.name}:build', input_shape: [3, {size}, {size}]}}"
    return write_scenario(folder, model, devices, name)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("devices", [2, 3])
@pytest.mark.parametrize("name", list(CUSTOM))
def test_every_planner_is_exact_on_dense_blocks_and_fire_modules(tmp_path, name, devices, method):
    source, size = CUSTOM[name]
    plan, prepared = plan_of(custom_scenario(tmp_path, name, source, size, devices), method)
    if method in SPLITTING:
        assert shares_a_block(plan, prepared), str(plan)
    assert verify(plan, prepared) <= TOLERANCE


def test_a_dense_block_is_one_stage_whose_layers_read_every_earlier_map(tmp_path):
    _, prepared = plan_of(custom_scenario(tmp_path, "densenet", DENSENET, 48, 2), "standalone")
    blocks = [layer for layer in prepared.graph.layers if layer.kind == BLOCK]
    assert [b.where for b in blocks] == ["features.denseblock1", "features.denseblock2"]
    for block in blocks:
        cats = [node for node in block.nodes if node.spec.op == "cat"]
        # each layer's input, then the block's output: 1, 2, 3 then 4 maps
        assert [len(node.inputs) for node in cats] == [1, 2, 3, 4]
        assert block.nodes[-1] is cats[-1] and -1 in cats[-1].inputs
    pool = next(layer for layer in prepared.graph.layers if layer.where == "features.transition1.pool")
    assert (pool.kernel, pool.stride, pool.op) == ((2, 2), (2, 2), "AvgPool2d")


def test_squeezenets_ceil_mode_poolings_have_partial_windows(tmp_path):
    _, prepared = plan_of(custom_scenario(tmp_path, "squeezenet", SQUEEZENET, 66, 2), "standalone")
    pools = [layer for layer in prepared.graph.layers if layer.op == "MaxPool2d"]
    assert [(p.in_height, p.out_height) for p in pools] == [(32, 16), (16, 8), (8, 4)]
    for p in pools:  # one more row than floor mode gives: its window runs past the map
        assert p.out_height == (p.in_height - 3) // 2 + 2
    fires = [layer for layer in prepared.graph.layers if layer.kind == BLOCK]
    assert len(fires) == 5 and all(f.where.startswith("features.") for f in fires)


# ---- 3. random DAGs ---------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(DAG, SIZE, st.data())
def test_any_row_slice_of_any_stages_of_a_random_dag_equals_the_whole(desc, size, data):
    model, graph = traced_dag(desc, size)
    x = torch.randn(1, *graph.input_shape)
    maps = boundary_maps(model, graph, x)
    with torch.no_grad():
        torch.testing.assert_close(maps[-1], model(x), rtol=0, atol=0)
    end = graph.spatial_end
    a = data.draw(st.integers(0, end - 1), label="start")
    b = data.draw(st.integers(a + 1, end), label="stop")
    r0 = data.draw(st.integers(0, graph.height(b) - 1), label="first row")
    r1 = data.draw(st.integers(r0 + 1, graph.height(b)), label="row stop")
    c0, c1 = 0, graph.width(b)
    if data.draw(st.booleans(), label="a tile, not whole rows"):
        c0 = data.draw(st.integers(0, c1 - 1), label="first column")
        c1 = data.draw(st.integers(c0 + 1, c1), label="column stop")
    out = region((r0, r1), (c0, c1))
    need = graph.rows_needed(a, b, out)
    if (c0, c1) == (0, graph.width(b)):  # the planners' rows-only hot path agrees
        assert graph.row_needed(a, b, (r0, r1)) == (need.rows.start, need.rows.stop)
    held = maps[a][..., need.rows.start:need.rows.stop, need.cols.start:need.cols.stop]
    piece = run_region(graph, a, b, held, need, out)
    scale = max(1.0, float(maps[b].abs().max()))
    torch.testing.assert_close(piece, maps[b][..., r0:r1, c0:c1], rtol=1e-5, atol=1e-5 * scale)


@settings(max_examples=60, deadline=None)
@given(DAG, SIZE, st.data())
def test_rows_computable_from_a_block_of_a_random_dag_need_only_it_and_are_maximal(desc, size, data):
    _, graph = traced_dag(desc, size)
    end = graph.spatial_end
    a = data.draw(st.integers(0, end - 1), label="start")
    b = data.draw(st.integers(a + 1, end), label="stop")
    x0 = data.draw(st.integers(0, graph.height(a) - 1), label="first row held")
    x1 = data.draw(st.integers(x0 + 1, graph.height(a)), label="row stop held")
    held = graph.rows(a, x0, x1)
    out = graph.computable(a, b, held)
    rows = graph.row_computable(a, b, (x0, x1))
    if out.empty:
        assert rows == (0, 0)
        assert not any(held.contains(graph.rows_needed(a, b, graph.rows(b, r, r + 1)))
                       for r in range(graph.height(b)))
        return
    assert rows == (out.rows.start, out.rows.stop)
    assert held.contains(graph.rows_needed(a, b, out))
    if out.rows.start > 0:
        assert not held.contains(graph.rows_needed(a, b, graph.rows(b, out.rows.start - 1, out.rows.stop)))
    if out.rows.stop < graph.height(b):
        assert not held.contains(graph.rows_needed(a, b, graph.rows(b, out.rows.start, out.rows.stop + 1)))


@settings(max_examples=50, deadline=None)
@given(DAG, SIZE, st.integers(2, 3), st.integers(0, 10_000))
def test_halp_and_modnn_plans_of_a_random_dag_are_exact(desc, size, devices, seed):
    model, graph = traced_dag(desc, size)
    rng = random.Random(seed)
    c, latency = cluster([1.0, *(rng.uniform(0.3, 3.0) for _ in range(devices - 1))],
                         [rng.choice([20e6, 100e6, 1e9]) for _ in range(devices - 1)], profile="rpi4")
    grid = (rng.randint(1, 4), rng.randint(1, 4))
    plans = [plan_for(HalpMethod(name="halp"), graph, c, latency, "dag"),
             plan_for(ModnnMethod(name="modnn"), graph, c, latency, "dag"),
             plan_for(DeepthingsMethod(name="deepthings", grid=grid), graph, c, latency, "dag"),
             halp_method.plan_segments(graph, c, latency, "dag", "halp",
                                       random_shares(graph, c.secondaries, seed))]
    for plan in plans:
        validate(plan, graph)
        error, scale = max_error(plan, graph, model, seed=seed)
        assert error <= TOLERANCE * max(scale, 1e-30), str(plan)


# ---- 4. a Sequential whose forward adds a skip ---------------------------------------------------
def test_a_sequential_with_its_own_forward_is_traced_as_its_forward(tmp_path):
    """Read as a list of children, these Sequentials are a chain (and a plan of that chain once
    showed a 2.25x speed-up while computing something else); their forward adds a skip."""
    factory = write_factory(tmp_path, SEQUENTIAL_SKIPS, "skips")
    spec = ModelSpec("custom", factory=f"{factory}:build", input_shape=(3, 64, 64))
    model = build_model(spec)
    graph = trace_model(model, spec.shape, spec.variant)
    skips = [layer for layer in graph.layers if layer.kind == BLOCK]
    assert [layer.where for layer in skips] == ["2", "4", "5"]
    for block in skips:  # the add reads the block's input: the skip
        add = next(node for node in block.nodes if node.spec.op == "add")
        assert -1 in add.inputs and len(add.inputs) == 2
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        as_chain = x
        for child in model.children():
            for layer in (child if isinstance(child, torch.nn.Sequential) else [child]):
                as_chain = layer(as_chain)
        assert not torch.allclose(as_chain, model(x), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("devices", [2, 3])
def test_every_planner_is_exact_on_a_sequential_with_a_skip(tmp_path, devices, method):
    plan, prepared = plan_of(custom_scenario(tmp_path, "skips", SEQUENTIAL_SKIPS, 64, devices), method)
    if method in SPLITTING:
        assert shares_a_block(plan, prepared), str(plan)
    assert verify(plan, prepared) <= TOLERANCE


# ---- 5. refusals -------------------------------------------------------------------------------
def says(line: str, words: list[str]) -> None:
    for word in words:
        assert word.lower() in line.lower(), (word, line)


@pytest.mark.parametrize(("factory", "words"), REFUSALS, ids=[f for f, _ in REFUSALS])
def test_a_model_that_cannot_be_split_is_refused_in_one_line_naming_where_and_the_op(tmp_path, factory, words):
    path = write_factory(tmp_path, REFUSED, "refused")
    spec = ModelSpec("custom", factory=f"{path}:{factory}", input_shape=(3, 32, 32))
    with pytest.raises(ModelError) as err:
        trace_model(build_model(spec), spec.shape, spec.variant)
    line = str(err.value)
    assert "\n" not in line and "Traceback" not in line
    says(line, [f"refused:{factory}", *words])


@pytest.mark.parametrize("command", ["plan", "verify"])
@pytest.mark.parametrize(("factory", "words"), REFUSALS, ids=[f for f, _ in REFUSALS])
def test_halp_refuses_such_a_model_with_exit_2_and_one_line(tmp_path, capsys, monkeypatch, command, factory, words):
    monkeypatch.chdir(tmp_path)
    write_factory(tmp_path, REFUSED, "refused")
    path = write_scenario(tmp_path, f"{{name: custom, factory: 'refused.py:{factory}', input_shape: [3, 32, 32]}}", 2)
    code = main([command, str(path)])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert lines[0].startswith(f"halp {command}: ")
    says(lines[0], words)
    assert captured.out == ""


def test_the_installed_command_refuses_squeeze_and_excitation_in_one_line(tmp_path):
    write_factory(tmp_path, REFUSED, "refused")
    path = write_scenario(tmp_path, "{name: custom, factory: 'refused.py:squeeze_excitation', "
                          "input_shape: [3, 32, 32]}", 3)
    result = subprocess.run([sys.executable, "-m", "halp.cli", "verify", str(path)], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    says(lines[0], ["halp verify:", "layer1.0.se", "squeeze-and-excitation"])


# ---- 6. plans of DAGs as JSON ----------------------------------------------------------------------
@pytest.mark.parametrize("method", ["halp", "modnn", "deepthings-fused"])
def test_a_dag_plan_survives_json_and_still_verifies(tmp_path, method):
    plan, prepared = plan_of(write_scenario(tmp_path, "{name: googlenet, resolution: 96}", 2), method)
    assert shares_a_block(plan, prepared)
    again = Plan.from_json(plan.to_json())
    assert again == plan
    validate(again, prepared.graph)
    assert verify(again, prepared) <= TOLERANCE


# ---- 7. ops that keep rows beyond the zoo's: padding, channel slices, clones ------------------
PADDED = '''
import torch
import torch.nn.functional as F
from torch import nn


class Padded(nn.Module):
    """Zero and constant padding (a module and F.pad), a channel slice each way, a clone."""

    def __init__(self):
        super().__init__()
        self.c1, self.pad = nn.Conv2d(3, 8, 3), nn.ZeroPad2d(1)
        self.c2, self.c3 = nn.Conv2d(8, 8, 3, stride=2), nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x):
        y = F.pad(self.pad(self.c1(x)), (2, 2, 1, 1), value=0.5)
        y = self.c2(y)
        a, b = y[:, :4], y[:, 4:, ...]
        return self.head(torch.cat([self.c3(a).clone(), b], 1))


def build():
    return Padded()
'''


def test_any_row_slice_through_padding_and_channel_slices_equals_the_whole(tmp_path):
    path = write_factory(tmp_path, PADDED, "padded")
    spec = ModelSpec("custom", factory=f"{path}:build", input_shape=(3, 23, 19))
    model = build_model(spec)
    graph = trace_model(model, spec.shape, spec.variant)
    x = torch.randn(1, 3, 23, 19, generator=torch.Generator().manual_seed(0))
    end = graph.spatial_end
    maps = [run_region(graph, 0, b, x, graph.full(0), graph.full(b)) if b else x for b in range(end + 1)]
    assert any(layer.op == "pad" for layer in graph.layers)

    for start in range(end):
        for stop in range(start + 1, end + 1):
            height = graph.height(stop)
            for a in range(height):  # every slice: those at a padded border read no row at all
                for b in range(a + 1, height + 1):
                    out = graph.rows(stop, a, b)
                    need = graph.rows_needed(start, stop, out)
                    got = run_region(graph, start, stop, crop(maps[start], graph.full(start), need), need, out)
                    assert torch.allclose(got, maps[stop][..., a:b, :], atol=1e-5), (start, stop, a, b)


@pytest.mark.parametrize("method", ["halp", "modnn", "deepthings-fused"])
def test_plans_through_padding_and_channel_slices_are_exact(tmp_path, method):
    plan, prepared = plan_of(custom_scenario(tmp_path, "padded", PADDED, 45, 3), method)
    assert verify(plan, prepared) <= TOLERANCE


# ---- 8. tracing beside a running model ---------------------------------------------------------
def test_tracing_leaves_models_running_in_other_threads_alone():
    """fx patches nn.Module.__call__ for the whole process while it traces: a worker that builds
    a model for a new session while its compute thread serves another must not break either."""
    import threading

    running = build_model(ModelSpec("mobilenet_v1", 0.25, 128))
    x = torch.randn(1, 3, 128, 128)
    stop, errors, calls = threading.Event(), [], [0]

    def serve():
        while not stop.is_set():
            try:
                with torch.no_grad():
                    running(x)
                calls[0] += 1
            except Exception as exc:  # what the race raised: NameError from fx's tracer
                errors.append(repr(exc))
                return

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        graphs = [trace_model(build_model(ModelSpec("resnet18", resolution=64)), (3, 64, 64), "r")
                  for _ in range(5)]
    finally:
        stop.set()
        thread.join()

    assert errors == [] and calls[0] > 0
    assert all(len(g) == len(graphs[0]) for g in graphs)
