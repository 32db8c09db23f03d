"""`halp profile --emu-cpu-share S`: run the profiler inside one CPU-limited Mininet host.

The profile of an emulated device must be measured where that device runs: in a cgroup that
gets `S` of one core with the emulator's CFS period. This builds a one-host network
(`emu.topology.single_host`), runs the same `halp profile` command in it (with this
interpreter, without `--emu-cpu-share`, and with `--cpu-share S` so the profile's provenance
says where it was measured), relays its output and tears everything down.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

from emu.network import EmulatedNetwork, require_emulator
from emu.processes import (
    Processes,
    Started,
    Terminated,
    child_env,
    new_tag,
    python_command,
    sigterm_raises,
)
from emu.topology import single_host
from halp.errors import BackendError
from halp.latency.profile import PROFILE_CFS_PERIOD_US


def run_limited(args: list[str], cpu_share: float, threads: int = 1,
                cfs_period_us: int = PROFILE_CFS_PERIOD_US,
                log: Callable[[str], None] | None = None) -> int:
    """Run `halp ARGS...` inside a host limited to `cpu_share` of a core; its exit code."""
    require_emulator()
    from mininet.util import numCores

    out = log or (lambda line: print(line, flush=True))
    topology = single_host(new_tag(), cpu_share, threads, cfs_period_us, numCores())
    device = topology.host.device
    processes = Processes()
    try:
        with sigterm_raises(), EmulatedNetwork(topology) as net:
            try:
                popen = net.node(device).popen(
                    python_command(*args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, env=child_env(threads), text=True, bufsize=1)
                processes.add(Started(device, "host", popen, None))
                assert popen.stdout is not None
                for line in popen.stdout:
                    out(line.rstrip("\n"))
                return popen.wait()
            finally:
                processes.stop_all()
    except Terminated:
        raise BackendError("profiling stopped by SIGTERM") from None


def probe_limited(cpu_share: float, threads: int = 1) -> dict[str, float]:
    """`halp probe` inside a host limited to `cpu_share` of a core: seconds per probe layer,
    timed as a profile measured there times its ops (`halp.latency.probe`)."""
    lines: list[str] = []
    code = run_limited(["probe", "--cpu-share", f"{cpu_share:g}", "--threads", str(threads),
                        "--json"], cpu_share, threads=threads, log=lines.append)
    try:
        if code != 0:
            raise ValueError(f"exit code {code}")
        seconds = json.loads(next(line for line in reversed(lines) if line.startswith("{")))
        return {str(name): float(value) for name, value in seconds.items()}
    except (StopIteration, ValueError, AttributeError) as exc:
        said = lines[-1] if lines else "nothing"
        raise BackendError(f"the probe inside a {cpu_share:g}-core host failed ({exc}): it "
                           f"said {said}") from None
