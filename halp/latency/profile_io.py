"""Writing a profile file: YAML under a comment header that says how the profile was made.

A profile file is read by people as much as by `halp.latency.profile.load_profile`: the header
says how its numbers were measured (or, for a derived profile, under which assumption they were
scaled: `halp.latency.derive`), and the YAML keeps a layer kind's coefficients on one line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from halp.latency.profile import Profile

HEADER = """\
# Latency profile of one device, measured and fitted by `halp profile` (halp/latency/profiler.py).
# Ops timed: run_region on row slices of the maps (heights x the map height, random positions),
# single layers and fused runs (a conv/dwconv/pool or a block with the layers up to the next
# one, and runs of 2..max_run of those, the whole spatial part, the classifier), each op of a
# block alone too (merges: adds, channel concatenations), in shuffled round-robin
# passes; per op the `statistic` (min, median, mean) of `repeats` clean calls (this thread kept
# its core) after a warm-up, torch.set_num_threads(threads), glibc keeping freed memory.
# Under a CPU quota (provenance.cpu_share < 1, clock "thread CPU time / cpu_share") a call's
# time is its CPU time over the share: the op's time with ops back to back at that share.
# Per layer kind: t = intercept_s + s_per_flop*flops + s_per_in_byte*in_bytes
#   + s_per_out_byte*out_bytes + s_per_weight_byte*weight_bytes
#   + s_per_flop_per_tap*flops/(kernel taps)          (a missing term is 0),
# plus op_overhead_s once per fused run: non-negative least squares on relative error.
# Kinds: conv, dwconv, pool, linear, elementwise, merge (without merge: merges as elementwise).
# held_out_mape: mean absolute percentage error (%) on the fused runs held out of the fit.
# copy_s_per_byte: torch.cat of row blocks. message_overhead_s: half the round trip of a
# 64-byte block along the runtime's path (thread, I/O thread, signing, ZeroMQ over TCP
# loopback to another process, checking, the waiting thread), each after 10 ms idle;
# message_s_per_byte: signing and checking a block, per byte (halp/latency/hop.py). Both
# exclude the bits on the wire / bandwidth.
# provenance.probe: seconds of four fixed layers at full speed (halp/latency/probe.py), to tell
# whether this profile still describes the machine it is used on; under a CPU quota also
# provenance.quota_probe: the same layers inside the quota, timed as the ops are (the mean of
# a probe before and one after measuring).
"""

EMULATED_HEADER = """\
# MEASURED UNDER EMULATION (provenance.emulated): the device's instructions were translated by
# an emulator (e.g. an arm64 userland under qemu-user on an x86 machine), so these times are the
# translator's, not the hardware's. NO TIMING REFERENCE: good for testing the tooling only.
"""


def write_profile(profile: Profile, path: str | Path, header: str = HEADER) -> Path:
    """Write `profile` as YAML, with a comment header saying how it was measured."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.dump(_plain(profile.to_dict()), Dumper=_Dumper, sort_keys=False, width=1000)
    if profile.provenance.get("emulated"):
        header = EMULATED_HEADER + header
    path.write_text(header + body)
    return path


class _Dumper(yaml.SafeDumper):
    """Block style, but a mapping of numbers (a kind's coefficients) or a list of plain values
    on one line."""

    def represent_dict(self, data):  # type: ignore[override]
        flow = bool(data) and all(isinstance(v, int | float | type(None)) for v in data.values())
        return self.represent_mapping("tag:yaml.org,2002:map", data, flow_style=flow)

    def represent_list(self, data):  # type: ignore[override]
        flow = all(not isinstance(v, dict | list) for v in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(dict, _Dumper.represent_dict)
_Dumper.add_representer(list, _Dumper.represent_list)


def _plain(value: Any) -> Any:
    """Plain YAML types (no numpy scalars, no tuples)."""
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, int) else k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str):
        return str(value)  # torch.__version__ is a str subclass that YAML refuses
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
