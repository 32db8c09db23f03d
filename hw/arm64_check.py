"""`make arm64-check`: what a Raspberry Pi user runs, against the arm64 device of this machine.

The arm64 device (`hw/arm64_device.py`, `make arm64-device`) plays the Pis' part; this machine
plays the controller and, through a second sshd of its own on 127.0.0.21:2223, an x86 host
device. With `scenarios/hw_arm64.yaml` (x0 the x86 host, a1 and a2 two workers on the arm64
device) it runs, each as the `halp` command a user types, each bounded in time:

1. `halp hw setup --wheels /var/cache/halp-arm64/wheels`: the venv on the device, torch 2.13.0
   for aarch64 and the project's wheel, from wheels fetched on this side (`pip download
   --platform manylinux_2_28_aarch64 ...`, cached) as for a Pi without internet;
2. `halp hw check`: reachable, versions, the model's digest on both architectures, clocks;
3. `halp hw profile ... a1 --quick`: a profile measured on the device, which must say in its
   provenance that it was measured under emulation;
4. `halp run --backend hw` for MobileNet-V1 0.25/128 and VGG-16, HALP and MoDNN: every request's
   output is compared on the x86 host with the whole model (`halp.runtime.TOLERANCE`), and the
   trace must hold ops of the arm64 workers.

It ends with one line `arm64 device: N requests exact, ...` and exit status 0, or one line
saying what failed and exit status 1. The x86 host's sshd is stopped by its pid on every path.

The x86 host device stands for a device `halp hw setup` prepared before: its venv
(`/var/cache/halp-arm64/device/venv`, the scenario's remote_dir on this machine) sees this
machine's torch and other packages through a `.pth` file (PyPI's x86 torch wheel is a CUDA
build); setup then installs only the project's wheel into it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from halp.processes import stop_tree
from hw.arm64_device import ADDRESS, CACHE, CLIENT_KEY, KNOWN_HOSTS, answers

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "hw_arm64.yaml"
WHEELS = CACHE / "wheels"
WORK = CACHE / "check"
X86 = CACHE / "x86"
X86_ADDRESS, X86_PORT = "127.0.0.21", 2223
REMOTE_DIR = CACHE / "device"  # the scenario's remote_dir, as the x86 host device sees it
SSHD = Path("/usr/sbin/sshd")
TORCH = "torch==2.13.0"
# Python 3.11 (bookworm's, as on Raspberry Pi OS), manylinux for aarch64 up to glibc 2.36.
PLATFORMS = ["manylinux2014_aarch64", "linux_aarch64",
             *(f"manylinux_2_{minor}_aarch64" for minor in range(17, 37))]
RUNS = [  # (label, --set overrides)
    ("mobilenet_v1 0.25/128 halp", ["method.name=halp"]),
    ("mobilenet_v1 0.25/128 modnn", ["method.name=modnn"]),
    ("vgg16 halp", ["method.name=halp", "model.name=vgg16", "model.width=1.0",
                    "model.resolution=224", "workload.requests=2"]),
    ("vgg16 modnn", ["method.name=modnn", "model.name=vgg16", "model.width=1.0",
                     "model.resolution=224", "workload.requests=2"]),
]
DOWNLOAD_TIMEOUT_S = 1800.0
SETUP_TIMEOUT_S = 5400.0  # 2.8 GB of wheels installed by an emulated pip
CHECK_TIMEOUT_S = 1800.0
PROFILE_TIMEOUT_S = 3600.0
RUN_TIMEOUT_S = 3600.0


class Failure(Exception):
    """One line for the user."""


def say(msg: str) -> None:
    print(f"arm64-check: {msg}", file=sys.stderr, flush=True)


def requirements() -> list[str]:
    """The project's dependencies as pyproject.toml states them."""
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return [str(d) for d in deps]


def fetch_wheels() -> None:
    """torch 2.13.0 for aarch64 and every other dependency, fetched once on this side."""
    if any(WHEELS.glob("torch-2.13.0-*aarch64.whl")) and (WHEELS / ".complete").is_file():
        return
    WHEELS.mkdir(parents=True, exist_ok=True)
    say(f"pip download of {TORCH} and halp's dependencies for aarch64 into {WHEELS} (2.8 GB)")
    argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
            "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
            *(a for p in PLATFORMS for a in ("--platform", p)), "-d", str(WHEELS),
            *requirements()]
    step("pip download", argv, DOWNLOAD_TIMEOUT_S)
    (WHEELS / ".complete").write_text("\n".join(requirements()) + "\n")


def step(what: str, argv: list[str], timeout_s: float, env: dict[str, str] | None = None,
         capture: bool = False) -> str:
    """Run one command, its output passed through (never silent), with a deadline."""
    began = time.monotonic()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE if capture else None,
                               stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        out, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        interrupt(process)
        raise Failure(f"{what} took longer than {timeout_s:.0f} s; stopped it") from None
    except BaseException:
        interrupt(process)
        raise
    took = time.monotonic() - began
    if process.returncode != 0:
        raise Failure(f"{what} failed (exit {process.returncode}) after {took:.0f} s")
    say(f"{what}: ok in {took:.0f} s")
    TIMES[what] = took
    return out or ""


TIMES: dict[str, float] = {}


def interrupt(process: subprocess.Popen[str]) -> None:
    """Ctrl-C first (`halp` then stops what it started on the devices and removes its
    folders there), SIGTERM, then SIGKILL, each given its time."""
    for sig, wait_s in ((signal.SIGINT, 60.0), (signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


# ---- the x86 host device ---------------------------------------------------------------------
class X86Host:
    """This machine as a device: its own sshd on 127.0.0.21:2223, stopped by its pid."""

    def __init__(self) -> None:
        self.popen: subprocess.Popen[bytes] | None = None

    def prepare(self) -> None:
        X86.mkdir(parents=True, exist_ok=True)
        host_key = X86 / "host_key"
        if not host_key.is_file():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "halp-x86-host",
                            "-f", str(host_key)], check=True, timeout=30)
        (X86 / "authorized_keys").write_text(Path(f"{CLIENT_KEY}.pub").read_text())
        (X86 / "sshd_config").write_text("\n".join([
            f"ListenAddress {X86_ADDRESS}:{X86_PORT}", f"HostKey {host_key}",
            "PidFile none", f"AuthorizedKeysFile {X86}/authorized_keys",
            "PermitRootLogin prohibit-password", "PubkeyAuthentication yes",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
            "StrictModes no", "MaxSessions 50", "MaxStartups 50:30:100",
            "Subsystem sftp internal-sftp", "ClientAliveInterval 5", "ClientAliveCountMax 3",
            "LogLevel INFO", ""]))
        kind, key = Path(f"{host_key}.pub").read_text().split()[:2]
        WORK.mkdir(parents=True, exist_ok=True)
        (WORK / "known_hosts").write_text(KNOWN_HOSTS.read_text()
                                          + f"[{X86_ADDRESS}]:{X86_PORT} {kind} {key}\n")
        self.venv()

    def venv(self) -> None:
        """A venv that sees this machine's packages but not its halp (setup installs that)."""
        venv = REMOTE_DIR / "venv"
        if (venv / "bin/python").exists():
            return
        base = Path(sys.base_prefix) / "bin" / "python3"
        subprocess.run([str(base), "-m", "venv", str(venv)], check=True, timeout=300)
        import sysconfig

        site = Path(sysconfig.get_paths()["purelib"])
        shim = X86 / "site"  # this machine's site-packages without halp
        if shim.exists():
            shutil.rmtree(shim)
        shim.mkdir()
        for entry in site.iterdir():
            if "halp" in entry.name or entry.name.startswith(("__editable__", "_distutils_hack",
                                                               "distutils-precedence")):
                continue
            (shim / entry.name).symlink_to(entry)
        inner = next((venv / "lib").glob("python3*/site-packages"))
        (inner / "x86-host-packages.pth").write_text(f"{shim}\n")

    def start(self) -> None:
        # sshd needs its privilege separation folder /run/sshd for every login. This machine's
        # is shared with whatever else starts sshds here (the hw tests' labs make and remove
        # it), so this sshd gets a /run of its own, in a mount namespace of its own.
        script = (f"mount -t tmpfs -o mode=755,size=1m tmpfs /run && mkdir -m 755 /run/sshd "
                  f"&& exec {SSHD} -D -e -f {X86 / 'sshd_config'}")
        log = (X86 / "sshd.log").open("a")
        self.popen = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "--",
                                       "sh", "-c", script],
                                      stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                      start_new_session=True)
        (X86 / "sshd.pid.check").write_text(f"{self.popen.pid}\n")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise Failure(f"the x86 host's sshd exited (see {X86}/sshd.log)")
            if answers_at(X86_ADDRESS, X86_PORT):
                return
            time.sleep(0.2)
        raise Failure(f"the x86 host's sshd did not answer on {X86_ADDRESS}:{X86_PORT}")

    def stop(self) -> None:
        if self.popen is not None:
            stop_tree(self.popen)
            self.popen = None
            (X86 / "sshd.pid.check").unlink(missing_ok=True)


def answers_at(address: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((address, port), timeout=2) as sock:
            sock.settimeout(2)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


# ---- the checks ----------------------------------------------------------------------------
def halp(*args: str) -> list[str]:
    return [sys.executable, "-m", "halp.cli", *args]


def check_profile(path: Path) -> str:
    import yaml

    text = path.read_text()
    provenance = (yaml.safe_load(text) or {}).get("provenance") or {}
    if not provenance.get("emulated") or "NO TIMING REFERENCE" not in text:
        raise Failure(f"{path}: the profile does not say it was measured under emulation")
    return str(provenance["emulated"])


def check_run(label: str, out: Path) -> tuple[int, float]:
    """(requests, worst relative error) of one run's folder; fails unless the arm64 workers
    computed part of it."""
    requests = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()
                if line.strip()]
    ops = [json.loads(line) for line in (out / "ops.jsonl").read_text().splitlines()
           if line.strip()]
    if not requests:
        raise Failure(f"{label}: no request finished")
    on_arm = sum(1 for op in ops if op.get("device") in ("a1", "a2") and op.get("kind") == "compute")
    if on_arm == 0:
        raise Failure(f"{label}: no op ran on the arm64 workers")
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    worst = max(float(r.get("extra", {}).get("relative_error", 0.0) or 0.0) for r in requests)
    errors = [r.get("max_abs_error") for r in requests]
    if any(e is None for e in errors):
        raise Failure(f"{label}: a request was not checked against the whole model")
    say(f"{label}: {len(requests)} requests, {on_arm} ops on arm64, max abs error "
        f"{max(errors):.3g}, relative {worst:.3g}"
        + (f", mean latency {report['summary']['latency_mean_s']:.2f} s"
           if "summary" in report and "latency_mean_s" in report["summary"] else ""))
    return len(requests), max(worst, 0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw.arm64_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip", default="", help="steps to skip: setup,check,profile,run")
    parser.add_argument("--runs", default="", help="only runs whose label contains this")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    if os.geteuid() != 0:
        say("needs root (it starts an sshd)")
        return 1
    if not answers_at(ADDRESS, 2222) and not answers():
        say("the arm64 device is not up: run `make arm64-device` first")
        return 1
    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so that every `finally` runs: the x86 sshd is stopped

    signal.signal(signal.SIGTERM, on_sigterm)
    env = {**os.environ, "HALP_HW_KNOWN_HOSTS": str(WORK / "known_hosts"),
           "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    host = X86Host()
    began = time.monotonic()
    try:
        fetch_wheels()
        host.prepare()
        host.start()
        scenario = str(SCENARIO)
        if "setup" not in skip:
            step("halp hw setup", halp("hw", "setup", scenario, "--wheels", str(WHEELS)),
                 SETUP_TIMEOUT_S, env)
        if "check" not in skip:
            step("halp hw check", halp("hw", "check", scenario), CHECK_TIMEOUT_S, env)
        emulated = "not profiled"
        if "profile" not in skip:
            out = WORK / "arm64-emulated.yaml"
            out.unlink(missing_ok=True)
            step("halp hw profile", halp("hw", "profile", scenario, "a1", "--quick",
                                         "--name", "arm64-emulated", "--out", str(out),
                                         "--model", "mobilenet_v1", "--width", "0.25",
                                         "--resolution", "128"), PROFILE_TIMEOUT_S, env)
            emulated = check_profile(out)
            say(f"profile {out}: provenance says {emulated!r}")
        total, worst, done = 0, 0.0, []
        if "run" not in skip:
            for label, sets in RUNS:
                if args.runs and args.runs not in label:
                    continue
                out = WORK / "runs" / label.replace(" ", "-").replace("/", "_")
                if out.exists():
                    shutil.rmtree(out)
                step(f"halp run ({label})",
                     halp("run", scenario, "--backend", "hw", "--out", str(out),
                          *(a for s in sets for a in ("--set", s))), RUN_TIMEOUT_S, env)
                n, w = check_run(label, out)
                total, worst = total + n, max(worst, w)
                done.append(label)
    except Failure as exc:
        say(str(exc))
        return 1
    except KeyboardInterrupt:
        say("interrupted; stopped what it started")
        return 1
    finally:
        host.stop()
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in TIMES.items())
    print(f"arm64 device: {total} requests exact (worst relative error {worst:.2g}) in "
          f"{len(done)} runs ({'; '.join(done) or 'none'}), x86 host and arm64 workers; "
          f"profile: {'emulated, no timing reference' if 'qemu' in emulated else emulated}; "
          f"{time.monotonic() - began:.0f} s ({timings})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
