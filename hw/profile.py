"""`halp hw profile SCENARIO DEVICE`: measure a device's latency profile on the device itself.

Runs `halp profile` there (under the guard, in `<remote_dir>/profile-<tag>`, with the device's
`threads`), relays its progress, copies `profiles/<name>.yaml` back to this machine and removes
the folder. Interrupted, it stops the remote profiler by its pid like any run.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

from halp.errors import BackendError
from halp.names import SAFE_NAME_RULE, is_safe_name
from halp.outdirs import below
from halp.scenario import Scenario
from hw.inventory import inventory
from hw.ssh import CONNECT_TIMEOUT_S, GUARD, connect

SILENCE_S = 900.0  # the profiler prints progress; this long without a line is a hang


def default_name(scenario: Scenario, device: str) -> str:
    """The device's profile name when it is a bare name (rpi4), else the device's name."""
    for d in scenario.devices:
        if d.name == device:
            bare = "/" not in d.profile and not d.profile.endswith((".yaml", ".yml"))
            return d.profile if bare else d.name
    return device


async def _profile(scenario: Scenario, device_name: str, name: str, out: Path,
                   extra: list[str], log: Callable[[str], None]) -> Path:
    inv = inventory(scenario)
    t = inv.target(device_name)
    device = await connect(t, min(CONNECT_TIMEOUT_S, inv.timeout_s))
    folder = None
    try:
        home = await device.resolve_home(inv.remote_dir)
        python = f"{home}/venv/bin/python"
        if (await device.run(f"test -x {shlex.quote(python)}", check=False))[0] != 0:
            raise BackendError(f"{t.device}: halp is not installed in {inv.remote_dir}/venv "
                               "there; run `halp hw setup SCENARIO` first")
        folder = f"{home}/profile-{time.strftime('%Y%m%d-%H%M%S')}-{t.device}"
        await device.run(f"mkdir -p -m 700 {shlex.quote(folder)}/profiles")
        await device.put(GUARD, f"{folder}/guard.py")
        argv = [python, "-m", "halp.cli", "profile", "--out", f"{folder}/profiles/{name}.yaml",
                "--name", name, "--threads", str(t.threads), *extra]
        log(f"{t.device}: halp profile {' '.join(argv[4:])}")
        env = {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(t.threads)}
        process = await device.start(argv, python=python, guard=f"{folder}/guard.py",
                                     log=f"{folder}/profile.log", cwd=folder, env=env,
                                     role="profiler",
                                     on_line=lambda line: log(f"{t.device}: {line}"))
        try:
            while not process.done:
                count = len(process.lines)
                await asyncio.wait([process.exited, device.closed], timeout=SILENCE_S,
                                   return_when=asyncio.FIRST_COMPLETED)
                if device.lost:
                    raise BackendError(device.lost_message("while profiling"))
                if not process.done and len(process.lines) == count:
                    raise BackendError(f"{t.device}: the profiler said nothing for "
                                       f"{SILENCE_S:.0f} s; stopped it")
        finally:
            problem = await process.stop()
            if problem:
                log(f"warning: {problem}")
        if process.status != 0:
            raise BackendError(f"{t.device}: halp profile failed (exit {process.status}): "
                               f"{process.last_line() or 'no output'}")
        out.parent.mkdir(parents=True, exist_ok=True)
        if not await device.get(f"{folder}/profiles/{name}.yaml", out):
            raise BackendError(f"{t.device}: halp profile wrote no profiles/{name}.yaml")
        return out
    finally:
        if folder is not None and not device.lost:
            try:
                await device.run(f"rm -rf -- {shlex.quote(folder)}")
            except BackendError as exc:
                log(f"warning: {exc}")
        await device.close()


def profile(scenario: Scenario, device: str, name: str | None = None, out: Path | None = None,
            extra: list[str] | None = None, log: Callable[[str], None] | None = None) -> Path:
    """Profile `device` in place; returns the local profile file."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    name = name or default_name(scenario, device)
    if not is_safe_name(name):  # it names files here and on the device
        raise BackendError(f"--name {name!r}: a profile name is {SAFE_NAME_RULE}")
    out = out or below(Path("profiles"), f"{name}.yaml")
    return asyncio.run(_profile(scenario, device, name, out, list(extra or []), log))
