"""What emulator tests share: the skip-or-fail gate and the "nothing left behind" check.

Emulator tests need root and Mininet. Elsewhere they skip; with `HALP_REQUIRE_EMU=1` in the
environment (the machine that is supposed to run them) a missing prerequisite is a failure, so
a broken set-up cannot pass as a green run of skips. Use it as

    pytestmark = [pytest.mark.emu, pytest.mark.usefixtures("emu_required")]
    from emu_support import emu_required, machine_state  # noqa: F401  (fixtures)

`machine_state` snapshots what an emulator run could leave behind (interfaces, network
namespaces, cgroups, descendant processes) and fails the test if anything new is there after it.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from halp.errors import BackendError
from halp.processes import descendants

from support import skip_or_fail


def emu_missing() -> str | None:
    """Why emulator tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "emulator tests need root"
    try:
        from emu.network import require_emulator

        require_emulator()
    except (BackendError, ImportError) as exc:  # its one-line refusal; anything else is a bug
        return str(exc)
    return None


def require_emu() -> None:
    """Skip the test when it cannot run here, or fail it under HALP_REQUIRE_EMU=1."""
    skip_or_fail(emu_missing())


@pytest.fixture
def emu_required() -> None:
    require_emu()


# ---- nothing left behind ------------------------------------------------------------------
CGROUP_DIRS = [Path("/sys/fs/cgroup") / c for c in ("cpu", "cpuacct", "cpuset")]


@dataclass(frozen=True)
class MachineState:
    links: frozenset[str]
    netns: frozenset[str]
    cgroups: frozenset[str]
    descendants: frozenset[tuple[int, str]]
    namespaces_held: frozenset[str]  # net namespaces our descendants are in

    def new_since(self, before: MachineState) -> list[str]:
        left = [f"interface {n}" for n in sorted(self.links - before.links)]
        left += [f"netns {n}" for n in sorted(self.netns - before.netns)]
        left += [f"cgroup {n}" for n in sorted(self.cgroups - before.cgroups)]
        left += [f"process {pid} {cmd}" for pid, cmd in sorted(self.descendants - before.descendants)]
        left += [f"namespace {n}" for n in sorted(self.namespaces_held - before.namespaces_held)]
        return left


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:80]


def snapshot() -> MachineState:
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    names = frozenset(line.split(":")[1].strip().split("@")[0] for line in links.splitlines()
                      if line.strip())
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    cgroups = frozenset(str(p) for d in CGROUP_DIRS if d.is_dir()
                        for p in d.iterdir() if p.is_dir())
    kids = descendants(os.getpid())
    held = set()
    for pid in kids:
        try:
            held.add(os.readlink(f"/proc/{pid}/ns/net"))
        except OSError:
            pass
    # The snapshotting commands themselves have exited by now; only real leftovers remain.
    return MachineState(names, frozenset(netns.split()), cgroups,
                        frozenset((p, _cmdline(p)) for p in kids if _cmdline(p)),
                        frozenset(held))


def assert_nothing_left(before: MachineState, settle_s: float = 3.0) -> None:
    deadline = time.monotonic() + settle_s
    while True:
        left = snapshot().new_since(before)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # the kernel deletes veths and namespaces asynchronously
    assert not left, "left behind: " + "; ".join(left)


@pytest.fixture
def machine_state():
    """Fail the test if it leaves interfaces, namespaces, cgroups or processes behind."""
    before = snapshot()
    yield before
    assert_nothing_left(before)
