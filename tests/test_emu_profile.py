"""`halp profile --emu-cpu-share`: a profile measured inside a CPU-limited Mininet host (root)."""

from __future__ import annotations

import json

import pytest
import yaml
from test_latency_profiler import parse

from halp.cli import main, profile_cmd
from halp.latency.probe import LAYERS, probe_machine, slowdowns
from halp.latency.profile import profile_from_dict
from halp.model.trace import trace_model
from halp.model.zoo import ModelSpec, build_model

from emu_support import emu_required, machine_state  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.emu, pytest.mark.usefixtures("emu_required", "machine_state")]


@pytest.mark.slow
@pytest.mark.long  # half a minute of profiling inside a quota
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
    # ... and inside the quota as well, timed as the ops are (CPU over the share): at least
    # four times the full-speed probe, give or take the noise between two processes.
    inside = slowdowns(limited.provenance["probe"], limited.provenance["quota_probe"])
    assert set(inside) == set(LAYERS) and all(r > 3.2 for r in inside.values()), inside
    assert "quota_probe" not in bare.provenance
    spec = ModelSpec("mobilenet_v1", 1.0, 224)
    graph = trace_model(build_model(spec), spec.shape, spec.variant)
    regions = list(graph.layer_regions(0, len(graph), graph.full(len(graph))))
    whole = sum(limited.layer_s(*r) for r in regions)
    fast = sum(bare.layer_s(*r) for r in regions)
    # Four times slower, and a little more: each op is timed by its CPU over the share, and
    # being throttled costs an op CPU (caches refilled after each pause: ~1.2x on MobileNet on
    # a quiet machine, 1.7x on a busy VM host on 2026-12-05, where it came out 6.7x the bare
    # profile). Timing the share twice over would be 16x.
    assert 3.4 * fast < whole < 8.5 * fast


def test_halp_probe_inside_a_quarter_core_takes_four_times_as_long_and_more(capsys):
    # Prepare / Execute: the probe inside an emulated quarter core (what `halp validate`
    # checks a quota profile against), then at full speed in this process.
    assert main(["probe", "--emu-cpu-share", "0.25", "--json"]) == 0
    inside = json.loads(capsys.readouterr().out)
    bare = probe_machine(repeats=10)

    ratios = slowdowns(bare, inside)

    # Assert: a quarter of a core, timed by CPU over the share: >= 4x, plus what being
    # throttled costs (cold caches after every pause; 1.2-2x on this machine's VMs).
    assert set(ratios) == set(LAYERS)
    assert all(3.2 < r < 16 for r in ratios.values()), ratios

