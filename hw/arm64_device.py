"""An arm64 (aarch64) "Raspberry Pi" on an x86-64 machine: a Debian bookworm arm64 userland
run by qemu-user through binfmt_misc, with its own sshd.

    python -m hw.arm64_device up      # build (once, cached) and start the device's sshd
    python -m hw.arm64_device status  # is it up? (exit 0 when sshd answers)
    python -m hw.arm64_device down    # stop its sshd (by pid)
    python -m hw.arm64_device clean   # stop, unregister, unmount, remove everything

`make arm64-device` is `up`, `make arm64-clean` is `clean`. Needs root, Debian's
`debootstrap` and `qemu-user-static` (installed with apt when missing). Everything lives in
`/var/cache/halp-arm64` (`HALP_ARM64_DIR`):

- `rootfs/`: Debian bookworm arm64 (`debootstrap --arch=arm64 --foreign`, then the second stage
  chrooted under qemu-aarch64-static) with python3, python3-venv and openssh-server: what
  Raspberry Pi OS Lite 64-bit is underneath;
- `client_key`, `client_key.pub`: the key authorised for root on the device;
- `known_hosts`: the device's host key, for `HALP_HW_KNOWN_HOSTS`;
- `sshd.pid`, `sshd.log`: the running sshd (the arm64 binary, emulated), and its log;
- `state.json`: what this script changed outside the folder (binfmt_misc mounted, the
  qemu-aarch64 format registered), so `clean` undoes exactly that.

The sshd runs in a mount namespace of its own (`unshare --mount`): `/proc`, `/sys` (a small
one describing a Pi 4's Cortex-A72 cores, see MOUNT_SCRIPT), `/dev`, `/dev/pts` and `/dev/shm`
are mounted inside the rootfs only there, so they vanish with the
sshd and never show in this machine's mount table; it shares this machine's network, listening
on `127.0.0.20:2222` (`HALP_ARM64_ADDRESS`, `HALP_ARM64_PORT`), so the device's workers are
reachable from an x86 host device on this machine like a Pi on a switch.

Every wait is bounded; a failure is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from halp.processes import descendants, signal_tree

CACHE = Path(os.environ.get("HALP_ARM64_DIR", "/var/cache/halp-arm64"))
ROOTFS = CACHE / "rootfs"
ADDRESS = os.environ.get("HALP_ARM64_ADDRESS", "127.0.0.20")
PORT = int(os.environ.get("HALP_ARM64_PORT", "2222"))
SUITE = "bookworm"  # Raspberry Pi OS Lite 64-bit is bookworm
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-venv", "python3-pip", "openssh-server", "ca-certificates")
BUILT = ROOTFS / ".halp-built"  # written last: a rootfs without it is rebuilt from scratch
BINFMT = Path("/proc/sys/fs/binfmt_misc")
QEMU_FORMAT = "qemu-aarch64"
QEMU_CONF = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
SSHD_CONFIG = "/etc/ssh/halp_sshd_config"  # inside the rootfs
# The CPU qemu-user emulates: a Raspberry Pi 4's. Its default, "max" (SVE and the rest), makes
# torch 2.13's aarch64 kernels compute MobileNet-V1 wrongly (44% relative error against x86,
# the first layer still exact); as a Cortex-A72 the outputs agree with x86 to 4e-7. qemu reads
# QEMU_CPU at every exec: sshd gets it, and its sessions through SetEnv.
QEMU_CPU = os.environ.get("HALP_ARM64_CPU", "cortex-a72")
DEBOOTSTRAP_TIMEOUT_S = 3600.0  # the second stage under emulation takes minutes
APT_TIMEOUT_S = 900.0
SSHD_START_S = 60.0  # the emulated sshd reads its keys and binds within seconds
STOP_S = 10.0

CLIENT_KEY = CACHE / "client_key"
KNOWN_HOSTS = CACHE / "known_hosts"
PID_FILE = CACHE / "sshd.pid"
SSHD_LOG = CACHE / "sshd.log"
STATE = CACHE / "state.json"


class Failure(Exception):
    """One line for the user."""


def say(msg: str) -> None:
    print(f"arm64-device: {msg}", file=sys.stderr, flush=True)


def run(argv: list[str], timeout_s: float, what: str, log: Path | None = None) -> str:
    """Run a command with a deadline; its output goes to `log` (appended) or is returned."""
    try:
        if log is not None:
            with log.open("a") as handle:
                result = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, timeout=timeout_s, text=True)
            out = ""
        else:
            result = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL,
                                    timeout=timeout_s, text=True)
            out = result.stdout + result.stderr
    except subprocess.TimeoutExpired:
        raise Failure(f"{what} took longer than {timeout_s:.0f} s; stopped it") from None
    except FileNotFoundError:
        raise Failure(f"{what}: {argv[0]} is not installed") from None
    if result.returncode != 0:
        tail = log.read_text().strip().splitlines()[-1:] if log else out.strip().splitlines()[-1:]
        where = f" (see {log})" if log else ""
        raise Failure(f"{what} failed (exit {result.returncode}): "
                      f"{tail[0] if tail else 'no output'}{where}")
    return result.stdout if log is None else ""


def state() -> dict[str, bool]:
    try:
        return dict(json.loads(STATE.read_text()))
    except (OSError, ValueError):
        return {}


def remember(**changes: bool) -> None:
    current = state()
    for key, value in changes.items():
        current[key] = current.get(key, False) or value
    CACHE.mkdir(parents=True, exist_ok=True)
    STATE.write_text(json.dumps(current) + "\n")


# ---- prerequisites -------------------------------------------------------------------------
def ensure_tools() -> None:
    missing = [pkg for pkg, path in (("debootstrap", "/usr/sbin/debootstrap"),
                                     ("qemu-user-static", "/usr/bin/qemu-aarch64-static"),
                                     ("openssh-client", "/usr/bin/ssh-keygen"))
               if not Path(path).exists()]
    if not missing:
        return
    say(f"installing {' '.join(missing)} with apt")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        result = subprocess.run(argv, capture_output=True, text=True, env=env,
                                timeout=APT_TIMEOUT_S, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise Failure(f"{' '.join(argv[:2])} failed: "
                          f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}")


def ensure_binfmt() -> None:
    """binfmt_misc mounted and qemu-aarch64 registered with the F flag (the interpreter is
    opened at registration, so it works inside the chroot without a copy there)."""
    if not (BINFMT / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], 30, "mounting binfmt_misc")
        remember(mounted_binfmt=True)
    entry = BINFMT / QEMU_FORMAT
    if entry.exists():
        text = entry.read_text()
        if "enabled" not in text.splitlines()[0]:
            raise Failure(f"{entry} is registered but disabled (echo 1 > {entry})")
        flags = next((ln.split()[1] for ln in text.splitlines() if ln.startswith("flags:")), "")
        if "F" not in flags:
            raise Failure(f"{entry} lacks the F flag, so it cannot run inside a chroot; "
                          f"echo -1 > {entry} and run this again")
        return
    if not QEMU_CONF.is_file():
        raise Failure(f"{QEMU_CONF} is missing: apt-get install qemu-user-static")
    try:
        (BINFMT / "register").write_text(QEMU_CONF.read_text().strip())
    except OSError as exc:
        raise Failure(f"registering {QEMU_FORMAT} with binfmt_misc failed: {exc}") from None
    remember(registered_qemu=True)


# ---- the root filesystem ---------------------------------------------------------------------
def build_rootfs() -> None:
    if BUILT.is_file():
        return
    if ROOTFS.exists():
        say(f"removing the unfinished {ROOTFS}")
        release_mounts()
        shutil.rmtree(ROOTFS)
    log = CACHE / "debootstrap.log"
    log.write_text("")
    began = time.monotonic()
    say(f"debootstrap --foreign {SUITE} arm64 into {ROOTFS} (log {log})")
    run(["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase",
         f"--include={','.join(PACKAGES)}", SUITE, str(ROOTFS), MIRROR],
        DEBOOTSTRAP_TIMEOUT_S, "debootstrap (first stage)", log)
    say(f"first stage done in {time.monotonic() - began:.0f} s; second stage under "
        "qemu-aarch64 (minutes)")
    run(["chroot", str(ROOTFS), "/debootstrap/debootstrap", "--second-stage"],
        DEBOOTSTRAP_TIMEOUT_S, "debootstrap --second-stage (emulated)", log)
    release_mounts()  # the second stage mounts /proc and /sys itself; none may stay
    machine = run(["chroot", str(ROOTFS), "/usr/bin/uname", "-m"], 60, "uname -m in the rootfs")
    if machine.strip() != "aarch64":
        raise Failure(f"the rootfs says it is {machine.strip()!r}, not aarch64")
    BUILT.write_text(f"{SUITE} arm64, built in {time.monotonic() - began:.0f} s\n")
    say(f"rootfs built in {time.monotonic() - began:.0f} s")


def configure() -> None:
    """Keys, sshd's own config file, root's authorized_keys; each only once."""
    keygen = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
    host_key = ROOTFS / "etc/ssh/halp_host_ed25519_key"
    if not host_key.is_file():
        run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", "halp-arm64-host", "-f",
             str(host_key)], 30, "ssh-keygen (host key)")
    if not CLIENT_KEY.is_file():
        run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", "halp-arm64-client", "-f",
             str(CLIENT_KEY)], 30, "ssh-keygen (client key)")
    ssh_dir = ROOTFS / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(Path(f"{CLIENT_KEY}.pub").read_text())
    (ssh_dir / "authorized_keys").chmod(0o600)
    kind, key = Path(f"{host_key}.pub").read_text().split()[:2]
    KNOWN_HOSTS.write_text(f"[{ADDRESS}]:{PORT} {kind} {key}\n")
    (ROOTFS / SSHD_CONFIG.lstrip("/")).write_text("\n".join([
        "# written by hw/arm64_device.py",
        f"ListenAddress {ADDRESS}:{PORT}",
        "HostKey /etc/ssh/halp_host_ed25519_key",
        "PidFile none",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "MaxSessions 50",
        "MaxStartups 50:30:100",
        "Subsystem sftp internal-sftp",
        f"SetEnv QEMU_CPU={QEMU_CPU}",  # every program a session runs: a Pi 4's CPU
        "ClientAliveInterval 5",  # as hw/README.md asks of a Pi
        "ClientAliveCountMax 3",
        "LogLevel INFO",
        "",
    ]))
    (ROOTFS / "run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation
    hostname = ROOTFS / "etc/hostname"
    if hostname.read_text().strip() != "halp-arm64":
        hostname.write_text("halp-arm64\n")
    machine_id = ROOTFS / "etc/machine-id"  # `halp hw setup` tells machines apart by it
    if not machine_id.is_file() or not machine_id.read_text().strip():
        machine_id.write_text(os.urandom(16).hex() + "\n")
    resolv = ROOTFS / "etc/resolv.conf"
    if not resolv.exists() and Path("/etc/resolv.conf").is_file():
        shutil.copy2("/etc/resolv.conf", resolv)


# ---- sshd ----------------------------------------------------------------------------------
def sshd_pid() -> int | None:
    """The pid of our sshd when it runs (the pid file names it and its command line says so)."""
    try:
        pid = int(PID_FILE.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return pid if SSHD_CONFIG.encode() in cmdline else None


def answers(timeout_s: float = 2.0) -> bool:
    """Does sshd send its banner?"""
    try:
        with socket.create_connection((ADDRESS, PORT), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


# /sys is not this machine's (an x86 sysfs makes oneDNN's xbyak_aarch64 in torch's aarch64 wheel
# crash on import: "Can't open MIDR_EL1 sysfs entry", then SIGSEGV) but a small one of a
# Raspberry Pi 4's CPUs: Cortex-A72 r0p3 (MIDR_EL1 0x410fd083), as many as this machine lends
# the device.
MOUNT_SCRIPT = """set -e
r={root}
mount -t proc proc "$r/proc"
mount -t tmpfs -o size=1m,mode=755 sysfs "$r/sys"
c="$r/sys/devices/system/cpu"
mkdir -p "$c"
echo 0-{last} > "$c/present"; echo 0-{last} > "$c/possible"; echo 0-{last} > "$c/online"
for i in $(seq 0 {last}); do
    mkdir -p "$c/cpu$i/regs/identification"
    echo 0x00000000410fd083 > "$c/cpu$i/regs/identification/midr_el1"
    echo 0x0000000000000000 > "$c/cpu$i/regs/identification/revidr_el1"
    echo 1 > "$c/cpu$i/online"
done
mount -o remount,ro "$r/sys"
mount --bind /dev "$r/dev"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$r/dev/pts"
mount -t tmpfs -o mode=1777 tmpfs "$r/dev/shm"
exec env QEMU_CPU={cpu} chroot "$r" /usr/sbin/sshd -D -e -f {config}
"""


def start_sshd() -> int:
    pid = sshd_pid()
    if pid is not None and answers():
        return pid
    if pid is not None:
        stop_sshd()
    cpus = len(os.sched_getaffinity(0))
    script = MOUNT_SCRIPT.format(root=ROOTFS, config=SSHD_CONFIG, last=cpus - 1,
                                 cpu=QEMU_CPU)
    with SSHD_LOG.open("a") as log:
        log.write(f"--- start {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        log.flush()
        # A mount namespace of its own: the mounts go when the sshd goes.
        popen = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "--",
                                  "sh", "-c", script], stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=log, start_new_session=True)
    PID_FILE.write_text(f"{popen.pid}\n")
    deadline = time.monotonic() + SSHD_START_S
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            PID_FILE.unlink(missing_ok=True)
            tail = SSHD_LOG.read_text().strip().splitlines()[-1:]
            raise Failure(f"the device's sshd exited (exit {popen.returncode}): "
                          f"{tail[0] if tail else 'no output'} (see {SSHD_LOG})")
        if answers():
            return popen.pid
        time.sleep(0.5)
    stop_sshd()
    raise Failure(f"the device's sshd did not answer on {ADDRESS}:{PORT} within "
                  f"{SSHD_START_S:.0f} s (see {SSHD_LOG})")



def alive(pid: int) -> bool:
    try:
        state_line = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state_line != "Z"


def stop_sshd() -> bool:
    """Stop our sshd and every session under it (its process tree, by pid); True if it ran."""
    pid = sshd_pid()
    if pid is None:
        PID_FILE.unlink(missing_ok=True)
        return False
    pids = [pid, *descendants(pid)]
    for sig, wait_s in ((signal.SIGTERM, STOP_S), (signal.SIGKILL, STOP_S)):
        signal_tree(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.2)
        if not any(alive(p) for p in pids):
            break
    left = [p for p in pids if alive(p)]
    if left:
        raise Failure(f"could not stop the device's sshd (pids {', '.join(map(str, left))})")
    PID_FILE.unlink(missing_ok=True)
    return True


def mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].encode().decode("unicode_escape")
        if target == prefix or target.startswith(prefix + "/"):
            found.append(target)
    return found


def release_mounts() -> None:
    """Unmount anything left under the rootfs in this machine's namespace (deepest first)."""
    for target in sorted(mounts_under(ROOTFS), key=len, reverse=True):
        try:
            run(["umount", target], 30, f"umount {target}")
        except Failure:
            run(["umount", "-l", target], 30, f"umount -l {target}")
    left = mounts_under(ROOTFS)
    if left:
        raise Failure(f"still mounted: {', '.join(left)}")


# ---- commands ------------------------------------------------------------------------------
def up() -> None:
    if os.geteuid() != 0:
        raise Failure("needs root (debootstrap, chroot, mounts)")
    began = time.monotonic()
    CACHE.mkdir(parents=True, exist_ok=True)
    ensure_tools()
    ensure_binfmt()
    build_rootfs()
    configure()
    pid = start_sshd()
    print(f"arm64 device up: ssh -i {CLIENT_KEY} -o UserKnownHostsFile={KNOWN_HOSTS} "
          f"-p {PORT} root@{ADDRESS} (sshd pid {pid}, {time.monotonic() - began:.0f} s)")


def status() -> int:
    pid = sshd_pid()
    ok = pid is not None and answers()
    print(f"arm64 device: rootfs {'built' if BUILT.is_file() else 'missing'}, sshd "
          f"{f'pid {pid}' if pid else 'not running'}, "
          f"{ADDRESS}:{PORT} {'answers' if ok else 'silent'}")
    return 0 if ok else 1


def down() -> None:
    print("arm64 device: sshd stopped" if stop_sshd() else "arm64 device: sshd was not running")


def clean() -> None:
    if os.geteuid() != 0:
        raise Failure("needs root")
    stop_sshd()
    if ROOTFS.exists():
        release_mounts()
    changed = state()
    if changed.get("registered_qemu") and (BINFMT / QEMU_FORMAT).exists():
        (BINFMT / QEMU_FORMAT).write_text("-1")
    if changed.get("mounted_binfmt") and (BINFMT / "register").exists():
        busy = [p.name for p in BINFMT.iterdir() if p.name not in ("register", "status")]
        if not busy:
            run(["umount", str(BINFMT)], 30, "umount binfmt_misc")
    if CACHE.exists():
        if mounts_under(CACHE):
            raise Failure(f"still mounted under {CACHE}: {', '.join(mounts_under(CACHE))}")
        shutil.rmtree(CACHE)
    print(f"arm64 device: removed {CACHE}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw.arm64_device", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("up", "status", "down", "clean"))
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up()
        elif args.command == "status":
            return status()
        elif args.command == "down":
            down()
        else:
            clean()
    except Failure as exc:
        say(str(exc))
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
