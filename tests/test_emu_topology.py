"""The emulated topology as a pure description: names, addresses, rates, CPU shares."""

from __future__ import annotations

import pytest
from conftest import write_scenario

from emu.topology import describe, rate_changes
from halp.errors import BackendError
from halp.scenario import load_scenario

SCENARIO = """\
name: t
model: {name: mobilenet_v1, width: 0.25, resolution: 128}
devices:
  - {name: host-device, role: host, profile: this-machine, cpu_share: 0.5}
  - {name: b, profile: this-machine, cpu_share: 0.25, port: 6000}
  - {name: c, profile: this-machine, cpu_share: 0.25}
network: {kind: KIND, bandwidth: 100Mbps, links: LINKS}
method: {name: halp}
"""


def scenario(tmp_path, kind="star", links="{c: 40Mbps}"):
    (tmp_path / "c.csv").write_text("time_s,bandwidth_bps\n0,20e6\n1.5,5e6\n3,20e6\n")
    text = SCENARIO.replace("KIND", kind).replace("LINKS", links)
    return load_scenario(write_scenario(tmp_path, text))


def test_star_shapes_every_secondary_and_leaves_the_host_alone(tmp_path):
    topo = describe(scenario(tmp_path), "ab1", cores=2)

    assert [n.node for n in topo.nodes] == ["hab10", "hab11", "hab12"]
    assert all(len(n.intf) <= 15 for n in topo.nodes)
    assert topo.link("host-device").rate_bps is None
    assert topo.link("b").rate_bps == 100e6
    assert topo.link("c").rate_bps == 40e6
    assert topo.channel_bps is None and topo.ifb is None
    assert topo.endpoints() == {"b": "tcp://10.77.0.2:6000", "c": "tcp://10.77.0.3:5555"}
    assert topo.cpu_fraction("host-device") == 0.25  # half a core of two
    assert not topo.needs_netem


def test_shared_has_one_channel_and_shapes_only_named_links(tmp_path):
    topo = describe(scenario(tmp_path, kind="shared"), "ab2", cores=2)

    assert topo.channel_bps == 100e6
    assert topo.ifb == "ifbab2"
    assert topo.link("b").rate_bps is None
    assert topo.link("c").rate_bps == 40e6


def test_bandwidth_trace_becomes_a_schedule_of_changes(tmp_path):
    topo = describe(scenario(tmp_path, links="{c: {trace: c.csv}}"), "ab3", cores=2)

    assert topo.link("c").live and topo.link("c").rate_bps == 20e6
    assert rate_changes(topo) == [(1.5, "c", 5e6), (3.0, "c", 20e6)]


def test_describe_has_no_side_effects_and_is_deterministic(tmp_path):
    s = scenario(tmp_path)
    assert describe(s, "ab4", cores=2) == describe(s, "ab4", cores=2)


@pytest.mark.parametrize("change, words", [
    ({"network.bandwidth": "2Gbps"}, "network.bandwidth"),
    ({"devices.b.cpu_share": 3}, "cpu_share"),
])
def test_what_cannot_be_emulated_is_refused_in_one_line(tmp_path, change, words):
    s = scenario(tmp_path).with_values(change)
    with pytest.raises(BackendError, match=words) as err:
        describe(s, "ab5", cores=2)
    assert "\n" not in str(err.value)


def test_a_tag_too_long_for_interface_names_is_refused():
    with pytest.raises(BackendError, match="tag"):
        describe(None, "toolong", cores=2)  # type: ignore[arg-type]


def test_without_root_the_emulator_says_so_in_one_line(tmp_path, monkeypatch):
    import os

    import emu.backend
    from emu.network import INSTALL_HINT

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(BackendError, match="not root") as err:
        emu.backend.BACKEND.check(scenario(tmp_path))
    assert str(err.value).startswith(INSTALL_HINT) and "\n" not in str(err.value)
    assert INSTALL_HINT == "the emulator needs root and Mininet (apt-get install mininet cgroup-tools)"


def test_without_mininet_the_emulator_says_so_in_one_line(monkeypatch):
    import os
    import sys

    from emu.network import INSTALL_HINT, require_emulator

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setitem(sys.modules, "mininet", None)  # import mininet -> ImportError
    monkeypatch.setitem(sys.modules, "mininet.net", None)
    with pytest.raises(BackendError, match="link_mininet.py") as err:
        require_emulator()
    assert str(err.value).startswith(INSTALL_HINT)
