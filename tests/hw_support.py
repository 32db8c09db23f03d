"""A hardware lab without Raspberry Pis: real sshd daemons on loopback addresses, one per device.

`Lab` starts one OpenSSH server per device, each on its own loopback address (127.0.0.1,
127.0.0.2, ...) and the same high port, with a generated host key, a generated client key in
an `authorized_keys` file of its own (`AuthorizedKeysFile`), `PermitRootLogin prohibit-password`
and no passwords. Every "device" is then a separate SSH login; the backend starts a separate
worker process through each. A device's `remote_dir` is a folder of the lab whose `venv` links
to this checkout's virtual environment: a device that `halp hw setup` already set up. Killing a
device's sshd with everything under it is a device that reboots (`Lab.reboot`).

Tests need root and /usr/sbin/sshd (and asyncssh). Elsewhere they skip; with
`HALP_REQUIRE_EMU=1` a missing prerequisite is a failure. Use it as

    pytestmark = [pytest.mark.hw, pytest.mark.usefixtures("hw_required")]
    from hw_support import hw_required, lab_fixture  # noqa: F401  (fixtures: hw_required, lab)

Every sshd is stopped by its pid at the end, and `Lab.leftovers()` lists any process still
running from the lab's folder (there must be none).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from halp.processes import signal_tree, stop_tree

from support import skip_or_fail

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"

PRIVSEP = Path("/run/sshd")
PROFILE = "rpi4"  # slow enough on paper that HALP shares the model out


def hw_missing() -> str | None:
    """Why the hardware tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "hardware tests start sshd and need root"
    if not SSHD.is_file():
        return f"hardware tests need OpenSSH's server ({SSHD}): apt-get install openssh-server"
    if not Path(SSH_KEYGEN).is_file():
        return "hardware tests need ssh-keygen: apt-get install openssh-client"
    try:
        import asyncssh  # noqa: F401
    except ImportError:
        return "hardware tests need asyncssh: pip install -e '.[hw]'"
    return None


def require_hw() -> None:
    """Skip the test when it cannot run here, or fail it under HALP_REQUIRE_EMU=1."""
    skip_or_fail(hw_missing())


@pytest.fixture
def hw_required() -> None:
    require_hw()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "halp-test", "-f",
                    str(path)], check=True)
    return path


class Sshd:
    """One sshd listening on `address:port`, stopped by its pid."""

    def __init__(self, lab: Lab, address: str):
        self.lab = lab
        self.address = address
        self.config = lab.root / f"sshd-{address}.conf"
        self.log = lab.root / f"sshd-{address}.log"
        self.config.write_text("\n".join([
            f"ListenAddress {address}:{lab.port}",
            f"HostKey {lab.host_key}",
            f"PidFile {lab.root}/sshd-{address}.pid",
            f"AuthorizedKeysFile {lab.authorized_keys}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",  # the lab lives under /tmp, which is world-writable
            "MaxSessions 50",
            "MaxStartups 50:30:100",
            "Subsystem sftp internal-sftp",
            "LogLevel VERBOSE",
            "",
        ]))
        self.popen: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("a") as log:
            self.popen = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(self.config)],
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"sshd on {self.address} exited: {self.log.read_text()[-500:]}")
            try:
                with socket.create_connection((self.address, self.lab.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd on {self.address} did not listen")

    def stop(self) -> None:
        """Stop this sshd by its pid; its sessions end with it (they are its children)."""
        if self.popen is None:
            return
        stop_tree(self.popen)
        self.popen = None

    def crash(self) -> None:
        """Power loss: SIGKILL to the daemon and everything it started."""
        assert self.popen is not None
        signal_tree(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)
        self.popen = None


class Lab:
    """`n` devices d0 (the host), d1, ... each behind its own sshd on 127.0.0.(i+1)."""

    def __init__(self, root: Path, n: int = 3):
        self.root = root
        self.port = free_port()
        self.addresses = [f"127.0.0.{i + 1}" for i in range(n)]
        self.host_key = keygen(root / "host_key")
        self.key = keygen(root / "client_key")
        self.bad_key = keygen(root / "other_key")  # a key no device accepts
        self.authorized_keys = root / "authorized_keys"
        self.authorized_keys.write_text(Path(f"{self.key}.pub").read_text())
        public = Path(f"{self.host_key}.pub").read_text().split()
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text("".join(f"[{a}]:{self.port} {public[0]} {public[1]}\n"
                                            for a in self.addresses))
        # What `halp hw setup` leaves on a device: its venv (here, this checkout's).
        self.remote_dir = root / "devices"
        self.remote_dir.mkdir()
        (self.remote_dir / "venv").symlink_to(Path(sys.prefix))
        self.sshds = {a: Sshd(self, a) for a in self.addresses}
        self.made_privsep = False

    def start(self) -> None:
        if not PRIVSEP.is_dir():  # sshd's privilege separation folder (the service makes it)
            PRIVSEP.mkdir(mode=0o755)
            self.made_privsep = True
        for sshd in self.sshds.values():
            sshd.start()

    def stop(self) -> None:
        for sshd in self.sshds.values():
            sshd.stop()
        if self.made_privsep:
            shutil.rmtree(PRIVSEP, ignore_errors=True)

    def reboot(self, index: int, down_s: float = 0.0) -> None:
        """Device `index` loses power (everything on it dies) and comes back `down_s` later."""
        sshd = self.sshds[self.addresses[index]]
        sshd.crash()
        time.sleep(down_s)
        sshd.start()

    def device_line(self, index: int, *, key: Path | None = None, port: int | None = None,
                    python: str | None = None) -> str:
        role = "role: host, " if index == 0 else ""
        extra = f", python: {python}" if python else ""
        return (f"  - {{name: d{index}, {role}profile: {PROFILE}, address: "
                f"{self.addresses[index]}, port: {17300 + index}, ssh_user: root, "
                f"ssh_key: {key or self.key}, ssh_port: {port or self.port}{extra}}}")

    def scenario_text(self, requests: int = 3, interval: str = "50ms",
                      start_workers: bool = True, timeout: str = "30s",
                      lines: list[str] | None = None, remote_dir: Path | None = None) -> str:
        arrival = ("workload: {requests: 1, arrival: single}" if requests == 1 else
                   f"workload: {{requests: {requests}, arrival: periodic, interval: {interval}}}")
        return "\n".join([
            "name: hw-lab", "seed: 3",
            "model: {name: mobilenet_v1, width: 0.25, resolution: 128}",
            "devices:", *(lines or [self.device_line(i) for i in range(len(self.addresses))]),
            "network: {kind: star, bandwidth: 1Gbps}",
            "method: {name: halp}",
            arrival,
            f"backends: {{hw: {{remote_dir: {remote_dir or self.remote_dir}, timeout: {timeout}, "
            f"start_workers: {str(start_workers).lower()}}}}}",
            ""])

    def write_scenario(self, text: str, name: str = "scenario.yaml") -> Path:
        path = self.root / name
        path.write_text(text)
        return path

    def leftovers(self, settle_s: float = 5.0) -> list[str]:
        """Processes still running from the lab's device folder (none may be)."""
        deadline = time.monotonic() + settle_s
        while True:
            left = processes_mentioning(str(self.remote_dir))
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.2)


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name} {cmdline.strip()}")
    return found


@pytest.fixture(scope="module", name="lab")
def lab_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Three devices behind three sshds, for the tests of one module; HALP_HW_KNOWN_HOSTS set."""
    require_hw()
    the_lab = Lab(tmp_path_factory.mktemp("hw-lab"))
    previous = os.environ.get("HALP_HW_KNOWN_HOSTS")
    os.environ["HALP_HW_KNOWN_HOSTS"] = str(the_lab.known_hosts)
    try:
        the_lab.start()
        yield the_lab
    finally:
        the_lab.stop()
        if previous is None:
            os.environ.pop("HALP_HW_KNOWN_HOSTS", None)
        else:
            os.environ["HALP_HW_KNOWN_HOSTS"] = previous
