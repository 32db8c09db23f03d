"""`halp hw setup`: install the project on every device over SSH, idempotently.

On the controller, `build_wheel` builds this checkout's wheel (`pip wheel --no-deps`, in a copy
of the sources, so the checkout gets no build folders) and takes its digest: a SHA-256 over the
names and contents of its members, so two builds of the same sources have the same digest even
though zip timestamps differ. Then, on every device at once (`setup_device`):

1. check the base interpreter (`devices[].python`, Python 3.11 or newer);
2. make the venv `<remote_dir>/venv` unless it exists (`--system-site-packages` on request,
   e.g. to use a torch that the system's packages provide);
3. install torch unless the pinned version (`torch==2.13.0`) is importable, on every
   architecture: the controller and every device must build bit-identical weights. On aarch64
   (a Raspberry Pi) PyPI's torch 2.13.0 is a CUDA build whose dependencies (cuda-toolkit,
   nvidia-cudnn-cu13, nvidia-nccl-cu13, triton, ...) are about 2.4 GB of wheels that torch
   loads on import even without a GPU; they install like any other dependency;
4. unless `<remote_dir>/installed.json` names this wheel's digest: copy the wheel across, install
   it without dependencies, then its other dependencies from the wheel's own metadata;
5. install the shared token `<remote_dir>/token` (mode 0600) that the permanent workers of
   `hw/halp-worker.service` and the host use when `backends.hw.start_workers` is false; the
   controller keeps the original in `~/.config/halp/hw-token`.

With `wheels` (`halp hw setup --wheels DIR`: a folder of wheels, e.g. made on the controller with
`pip download --platform manylinux_2_28_aarch64 --python-version 3.11 --only-binary=:all: -d DIR
torch==2.13.0 ...`), the device needs no internet: the folder's wheels are copied to
`<remote_dir>/wheelhouse` (only those not there yet, by name and size) and every `pip install`
there runs with `--no-index --find-links` on it.

Devices that share one machine and one remote_dir (two names for one board, or a test lab) are
installed once; the others say whose installation they share.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import Parser
from pathlib import Path

from halp.errors import BackendError
from halp.scenario import Scenario
from hw.inventory import Inventory, Target, inventory
from hw.ssh import CONNECT_TIMEOUT_S, Device, connect_all

SOURCES = ("pyproject.toml", "halp", "sim", "emu", "hw")
MIN_PYTHON = (3, 11)
PIP_TIMEOUT_S = 3600.0  # torch on a Raspberry Pi over a slow link
IMPORT_TIMEOUT_S = 900.0  # a first `import torch` on a Pi's SD card (or under emulation)
COPY_TIMEOUT_S = 3600.0  # the wheelhouse (2.8 GB for aarch64) over a slow link
WHEELHOUSE = "wheelhouse"
INSTALLED = "installed.json"


@dataclass(frozen=True)
class Wheel:
    path: Path
    digest: str
    requires: tuple[str, ...]  # its dependencies as written, without extras

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def torch(self) -> str:
        """The torch requirement the project pins (`torch==2.13.0`)."""
        return next((r for r in self.requires if _project(r) == "torch"), "torch")

    @property
    def others(self) -> list[str]:
        return [r for r in self.requires if _project(r) != "torch"]


@dataclass
class Outcome:
    device: str
    did: list[str] = field(default_factory=list)
    error: str | None = None

    def line(self) -> str:
        if self.error:
            return f"{self.device}: FAILED: {self.error}"
        return f"{self.device}: {'; '.join(self.did)}"


def project_root() -> Path:
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise BackendError("halp hw setup builds the wheel from a checkout; run it from one "
                           "(pip install -e .)")
    return root


def wheel_digest(path: Path) -> str:
    """SHA-256 over the members' names and contents (not their timestamps), 16 hex digits."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(path) as archive:
        for name in sorted(archive.namelist()):
            digest.update(name.encode() + b"\0")
            digest.update(archive.read(name))
            digest.update(b"\0")
    return digest.hexdigest()[:16]


def wheel_requires(path: Path) -> tuple[str, ...]:
    with zipfile.ZipFile(path) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(archive.read(meta).decode())
    return tuple(r.strip() for r in message.get_all("Requires-Dist") or [] if "extra ==" not in r)


def _project(requirement: str) -> str:
    name = requirement
    for stop in "<>=!~;[ (":
        name = name.split(stop, 1)[0]
    return name.strip().lower().replace("_", "-")


def build_wheel(out_dir: Path, log: Callable[[str], None]) -> Wheel:
    """Build the checkout's wheel into `out_dir` from a copy of its sources."""
    root = project_root()
    src = out_dir / "src"
    src.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        path = root / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        elif path.is_file():
            shutil.copy2(path, src / name)
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out_dir),
            str(src)]
    try:
        import setuptools  # noqa: F401  (present: build here, without fetching a build env)

        argv.insert(4, "--no-build-isolation")
    except ImportError:
        pass
    began = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True)
    wheels = sorted(out_dir.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise BackendError(f"building the wheel failed: {last}")
    wheel = Wheel(wheels[0], wheel_digest(wheels[0]), wheel_requires(wheels[0]))
    log(f"built {wheel.name} (digest {wheel.digest}) in {time.monotonic() - began:.0f} s")
    return wheel


def local_token() -> Path:
    """The controller's copy of the devices' shared token (made once)."""
    from halp.runtime.auth import write_token

    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    path = base / "halp" / "hw-token"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_token(path)
    return path


# ---- on a device --------------------------------------------------------------------------
PY_VERSION = "import sys; print('%d.%d.%d' % sys.version_info[:3])"
TORCH_VERSION = "import torch; print(torch.__version__)"


ARCHES = ("x86_64", "aarch64", "armv7l", "i686", "ppc64le", "s390x", "riscv64")


def fits(wheel_name: str, machine: str) -> bool:
    """Whether a wheel's platform tag (`..._aarch64.whl`, `...-any.whl`) suits `machine`."""
    platform = wheel_name.removesuffix(".whl").rsplit("-", 1)[-1]
    named = [a for a in ARCHES if a in platform]
    return not named or machine in named


async def copy_wheelhouse(device: Device, home: str, wheels: Path, machine: str,
                          log: Callable[[str], None]) -> tuple[str, int]:
    """Copy the local folder's wheels for the device's architecture that it lacks (by name
    and size) into `<home>/wheelhouse`; returns that folder and how many were copied."""
    q = shlex.quote
    remote = f"{home}/{WHEELHOUSE}"
    await device.run(f"mkdir -p {q(remote)}", what=f"creating {remote}")
    _, out, _ = await device.run(f"cd {q(remote)} && for f in *.whl; do [ -f \"$f\" ] && "
                                 "echo \"$(stat -c %s \"$f\") $f\"; done; true",
                                 what="listing the wheelhouse")
    there = {}
    for line in out.splitlines():
        bytes_, _, name = line.partition(" ")
        if bytes_.isdigit():
            there[name] = int(bytes_)
    copied = 0
    todo = [p for p in sorted(wheels.glob("*.whl"))
            if fits(p.name, machine) and there.get(p.name) != p.stat().st_size]
    if todo:
        size = sum(p.stat().st_size for p in todo)
        log(f"copying {len(todo)} wheels ({size / 1e6:.0f} MB) to {remote}")
    for path in todo:
        try:
            await asyncio.wait_for(device.put(path, f"{remote}/{path.name}.part"), COPY_TIMEOUT_S)
        except TimeoutError:
            raise BackendError(f"{device.name}: copying {path.name} took longer than "
                               f"{COPY_TIMEOUT_S:.0f} s") from None
        await device.run(f"mv -f {q(remote)}/{q(path.name)}.part {q(remote)}/{q(path.name)}",
                         what="storing a wheel")
        copied += 1
    return remote, copied


async def setup_device(device: Device, home: str, wheel: Wheel, token: str,
                       system_site_packages: bool, force: bool,
                       wheels: Path | None = None,
                       log: Callable[[str], None] | None = None) -> list[str]:
    """Install on one device; returns what it did, as short phrases. `log` hears about
    every step that may take long (on a Pi: minutes)."""
    t = device.target
    did: list[str] = []
    q = shlex.quote

    def say(msg: str) -> None:
        if log is not None:
            log(f"{device.name}: {msg}")
    _, machine, _ = await device.run("uname -m", what="uname -m")
    machine = machine.strip()
    status, out, err = await device.run(f"{q(t.python)} -c {q(PY_VERSION)}", check=False)
    if status != 0:
        raise BackendError(f"{t.python} does not run there ({(err or out).strip()[-120:] or status}); "
                           "set devices[].python to a Python 3.11+")
    version = out.strip()
    if tuple(int(v) for v in version.split(".")[:2]) < MIN_PYTHON:
        raise BackendError(f"{t.python} is Python {version}; halp needs 3.11 or newer "
                           "(set devices[].python)")
    did.append(f"{machine}, Python {version}")
    venv, python = f"{home}/venv", f"{home}/venv/bin/python"
    if (await device.run(f"test -x {q(python)}", check=False))[0] != 0:
        flag = " --system-site-packages" if system_site_packages else ""
        await device.run(f"{q(t.python)} -m venv{flag} {q(venv)}", timeout_s=300,
                         what="creating the venv (on Debian: apt install python3-venv)")
        did.append(f"created {venv}")
    pip = f"{q(python)} -m pip install --quiet --disable-pip-version-check"
    if wheels is not None:
        house, copied = await copy_wheelhouse(device, home, wheels, machine, say)
        pip += f" --no-index --find-links {q(house)}"
        did.append(f"copied {copied} wheels to {house}" if copied else f"wheels in {house}")
    status, out, _ = await device.run(f"{q(python)} -c {q(TORCH_VERSION)}", check=False,
                                      timeout_s=IMPORT_TIMEOUT_S)
    have = out.strip() if status == 0 else None
    want = wheel.torch
    pinned = want.partition("==")[2]
    if have is None or (pinned and have.split("+")[0] != pinned):
        say(f"pip install {want} ({machine}; minutes on a Pi)")
        await device.run(f"{pip} {q(want)}", timeout_s=PIP_TIMEOUT_S, what=f"pip install {want}")
        _, out, _ = await device.run(f"{q(python)} -c {q(TORCH_VERSION)}",
                                     timeout_s=IMPORT_TIMEOUT_S, what="importing torch")
        did.append(f"installed torch {out.strip()} ({machine})")
        say(f"torch {out.strip()} imports")
    else:
        did.append(f"torch {have} present")
    _, out, _ = await device.run(f"cat {q(home)}/{INSTALLED} 2>/dev/null; true")
    try:
        installed = json.loads(out) if out.strip() else {}
    except ValueError:
        installed = {}
    importable = (await device.run(f"{q(python)} -c 'import halp.cli'", check=False,
                                   timeout_s=IMPORT_TIMEOUT_S))[0] == 0
    if force or installed.get("digest") != wheel.digest or not importable:
        say(f"installing {wheel.name} and its dependencies")
        await device.run(f"mkdir -p {q(home)}/wheels")
        remote = f"{home}/wheels/{wheel.name}"
        await device.put(wheel.path, remote)
        await device.run(f"{pip} --no-deps --force-reinstall {q(remote)}",
                         timeout_s=PIP_TIMEOUT_S, what=f"pip install {wheel.name}")
        if wheel.others:
            await device.run(f"{pip} " + " ".join(q(r) for r in wheel.others),
                             timeout_s=PIP_TIMEOUT_S, what="pip install of halp's dependencies")
        await device.run(f"{q(python)} -c 'import halp.cli, halp.runtime'",
                         timeout_s=IMPORT_TIMEOUT_S, what="importing halp")
        record = {"digest": wheel.digest, "wheel": wheel.name, "installed_at": time.time(),
                  "python": version, "machine": machine}
        await device.write(f"{home}/{INSTALLED}", json.dumps(record) + "\n")
        did.append(f"installed {wheel.name} (digest {wheel.digest})")
    else:
        did.append(f"halp up to date (digest {wheel.digest})")
    _, out, _ = await device.run(f"cat {q(home)}/token 2>/dev/null; true")
    if out.strip() != token.strip():
        await device.write(f"{home}/token", token, mode=0o600)
        did.append(f"installed the token {home}/token")
    return did


async def _setup_all(inv: Inventory, wheel: Wheel, token: str, system_site_packages: bool,
                     force: bool, log: Callable[[str], None],
                     wheels: Path | None = None) -> list[Outcome]:
    devices = await connect_all(list(inv.targets), min(CONNECT_TIMEOUT_S, inv.timeout_s))
    try:
        homes = await asyncio.gather(*(d.resolve_home(inv.remote_dir) for d in devices))
        ids = await asyncio.gather(*(d.run("cat /etc/machine-id 2>/dev/null || hostname")
                                     for d in devices))
        first: dict[tuple[str, str], Target] = {}
        owners: dict[str, Target] = {}
        for device, home, (_, machine_id, _) in zip(devices, homes, ids, strict=True):
            owners[device.name] = first.setdefault((machine_id.strip(), home), device.target)
        outcomes = {d.name: Outcome(d.name) for d in devices}

        async def one(device: Device, home: str) -> None:
            outcome = outcomes[device.name]
            began = time.monotonic()
            try:
                outcome.did = await setup_device(device, home, wheel, token, system_site_packages,
                                                 force, wheels, log)
                outcome.did.append(f"{time.monotonic() - began:.0f} s")
            except BackendError as exc:
                outcome.error = str(exc).removeprefix(f"{device.name}: ")
            log(f"{device.name}: {'failed' if outcome.error else 'done'} after "
                f"{time.monotonic() - began:.0f} s")

        await asyncio.gather(*(one(d, h) for d, h in zip(devices, homes, strict=True)
                               if owners[d.name].device == d.name))
        for d, home in zip(devices, homes, strict=True):
            owner = owners[d.name]
            if owner.device != d.name:
                shared = outcomes[owner.device]
                outcomes[d.name].did = [f"shares {owner.device}'s installation in {home}"]
                outcomes[d.name].error = shared.error and f"(as {owner.device}) {shared.error}"
        return [outcomes[t.device] for t in inv.targets]
    finally:
        await asyncio.gather(*(d.close() for d in devices), return_exceptions=True)


def read_wheel(path: Path) -> Wheel:
    """A wheel built before (`--wheel`): checked, with its digest."""
    if not path.is_file() or path.suffix != ".whl":
        raise BackendError(f"--wheel {path}: no such wheel file")
    try:
        return Wheel(path, wheel_digest(path), wheel_requires(path))
    except (zipfile.BadZipFile, StopIteration):
        raise BackendError(f"--wheel {path}: not a wheel (no .dist-info/METADATA)") from None


def setup(scenario: Scenario, system_site_packages: bool = False, force: bool = False,
          wheel: Path | None = None, log: Callable[[str], None] | None = None,
          wheels: Path | None = None) -> list[Outcome]:
    """Install the project on every device of the scenario; one Outcome per device. `wheel`
    installs that wheel instead of building this checkout's; `wheels` is a folder of wheels the
    devices install from instead of the package index."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    inv = inventory(scenario)
    token = local_token().read_text()
    if wheels is not None and not any(wheels.glob("*.whl")):
        raise BackendError(f"--wheels {wheels}: no .whl files there")
    if wheel is not None:
        built = read_wheel(wheel)
        return asyncio.run(_setup_all(inv, built, token, system_site_packages, force, log,
                                      wheels))
    with tempfile.TemporaryDirectory(prefix="halp-hw-wheel-") as tmp:
        built = build_wheel(Path(tmp), log)
        return asyncio.run(_setup_all(inv, built, token, system_site_packages, force, log,
                                      wheels))
