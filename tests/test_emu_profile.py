"""`halp profile --emu-cpu-share`: a profile measured inside a CPU-limited Mininet host (root)."""

from __future__ import annotations

import pytest
import yaml
from test_latency_profiler import parse

from halp.cli import profile_cmd
from halp.latency.probe import slowdowns
from halp.latency.profile import profile_from_dict
from halp.model.graph import ModelGraph
from halp.model.zoo import ModelSpec, build_model

from emu_support import emu_required, machine_state  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.emu, pytest.mark.usefixtures("emu_required", "machine_state")]


@pytest.mark.slow
def test_a_profile_measured_on_a_quarter_core_says_so_and_predicts_a_slower_device(tmp_path):
    profiles = {}
    for share in (None, 0.25):
        out = tmp_path / f"{share}.yaml"
        argv = ["--model", "mobilenet_v1", "--width", "1", "--resolution", "224", "--quick",
                "--repeats", "3", "--statistic", "mean", "--out", str(out)]
        if share is not None:
            argv += ["--emu-cpu-share", str(share)]
        assert profile_cmd.run(parse(*argv)) == 0
        profiles[share] = profile_from_dict(yaml.safe_load(out.read_text()), str(out))

    limited, bare = profiles[0.25], profiles[None]
    assert limited.provenance["cpu_share"] == 0.25 and limited.provenance["cfs_period_us"] == 10_000
    assert limited.provenance["clock"] == "thread CPU time / cpu_share"
    assert bare.provenance["clock"] == "wall"
    assert limited.cpu_quota == (0.25, 0.01) and bare.cpu_quota is None
    # The probe says what machine this is, so it is measured outside the quota: there, a 4 ms
    # linear layer would wait out a throttled period (>= 2.8x as long).
    assert slowdowns(bare.provenance["probe"], limited.provenance["probe"])["linear"] < 2.0
    spec = ModelSpec("mobilenet_v1", 1.0, 224)
    graph = ModelGraph.from_module(build_model(spec), spec.shape, spec.variant)
    regions = list(graph.layer_regions(0, len(graph), graph.full(len(graph))))
    whole = sum(limited.layer_s(*r) for r in regions)
    fast = sum(bare.layer_s(*r) for r in regions)
    # Four times slower, and a little more: each op is timed by its CPU over the share, and
    # being throttled costs an op CPU (caches refilled after each pause; ~1.2x on MobileNet).
    assert 3.4 * fast < whole < 6.5 * fast
