"""The inventory: which devices a hardware run uses and how to reach each, read from the scenario.

A description only (no SSH, no files touched): `inventory(scenario)` checks that every device
says where it is and returns one `Target` per device; `device_scenario` writes the scenario as
the host device will load it, with the files it names (profiles, weights, bandwidth traces)
listed for copying beside it, since the device has no checkout.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from halp.errors import BackendError, HalpError
from halp.latency.profile import find_profile
from halp.runtime.files import FACTORY, WEIGHTS
from halp.scenario import Scenario

KNOWN_HOSTS_ENV = "HALP_HW_KNOWN_HOSTS"  # a known_hosts file other than ~/.ssh/known_hosts


@dataclass(frozen=True)
class Target:
    """One device as the controller reaches it (SSH) and as the host reaches it (ZeroMQ)."""

    device: str
    role: str  # host | secondary
    address: str
    ssh_port: int
    ssh_user: str | None
    ssh_key: str | None  # absolute path, or None for the SSH defaults (agent, ~/.ssh/id_*)
    python: str  # the interpreter `halp hw setup` makes the venv with
    port: int  # the worker's port
    threads: int

    @property
    def where(self) -> str:
        user = f"{self.ssh_user}@" if self.ssh_user else ""
        return f"{user}{self.address}:{self.ssh_port}"

    @property
    def endpoint(self) -> str:
        """Where the host connects to this device's worker."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"tcp://{host}:{self.port}"

    @property
    def listen(self) -> str:
        """Where the worker binds: the device's address when it is an IP address, else all."""
        if is_ip(self.address):
            return self.endpoint
        return f"tcp://0.0.0.0:{self.port}"

    @property
    def bind(self) -> str:
        return self.address if is_ip(self.address) else "0.0.0.0"


@dataclass(frozen=True)
class Inventory:
    targets: tuple[Target, ...]
    remote_dir: str
    timeout_s: float
    start_workers: bool

    @property
    def host(self) -> Target:
        return next(t for t in self.targets if t.role == "host")

    @property
    def secondaries(self) -> list[Target]:
        return [t for t in self.targets if t.role != "host"]

    def target(self, device: str) -> Target:
        for t in self.targets:
            if t.device == device:
                return t
        raise BackendError(f"no device {device!r} in the scenario; it has "
                           f"{', '.join(t.device for t in self.targets)}")


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def inventory(scenario: Scenario) -> Inventory:
    """The scenario's devices as SSH targets; one line naming the device if one is incomplete."""
    targets = []
    for i, d in enumerate(scenario.devices):
        if not d.address:
            raise BackendError(f"devices.{i} ({d.name}): no address; the hardware backend needs "
                               "address: (and usually ssh_user:, ssh_key:) for every device")
        key = str(scenario.resolve(d.ssh_key)) if d.ssh_key else None
        targets.append(Target(d.name, d.role, d.address, d.ssh_port, d.ssh_user, key, d.python,
                              d.port, d.threads))
    seen: dict[tuple[str, int], str] = {}
    for t in targets:
        if t.role == "host":
            continue
        other = seen.setdefault((t.address, t.port), t.device)
        if other != t.device:
            raise BackendError(f"devices {other} and {t.device} both put their worker at "
                               f"{t.address}:{t.port}; give one of them another port")
    hw = scenario.backends.hw
    return Inventory(tuple(targets), hw.remote_dir, hw.timeout, hw.start_workers)


def known_hosts() -> str | None:
    """The known_hosts file to check device keys against (None: the SSH default)."""
    return os.environ.get(KNOWN_HOSTS_ENV) or None


def shell_path(path: str) -> str:
    """A remote path for a POSIX shell: quoted, with a leading `~` left to the shell."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def command(argv: list[str], cwd: str | None = None, env: dict[str, str] | None = None) -> str:
    """One shell command line from an argv (every word quoted)."""
    words = ["exec"]
    if env:
        words += ["env", *(f"{k}={shlex.quote(v)}" for k, v in env.items())]
    words += [shlex.quote(a) for a in argv]
    line = " ".join(words)
    return f"cd {shlex.quote(cwd)} && {line}" if cwd else line


# ---- the scenario as the host device loads it --------------------------------------------
def device_scenario(scenario: Scenario) -> tuple[str, dict[str, Path]]:
    """The scenario's YAML with every file it names made relative to its own folder, and the
    local files to copy there (relative remote path -> local path)."""
    data: dict[str, Any] = yaml.safe_load(scenario.to_yaml())
    files: dict[str, Path] = {}
    by_stem: dict[str, Path] = {}
    for i, device in enumerate(data["devices"]):
        try:
            path = find_profile(device["profile"], scenario.base).resolve()
        except HalpError as exc:
            raise BackendError(f"devices.{i}.profile: {exc}") from None
        name = path.stem
        while name in by_stem and by_stem[name] != path:
            name += "_"
        by_stem[name] = path
        files[f"profiles/{name}.yaml"] = path
        device["profile"] = name
    if scenario.model.weights:
        files["weights.pt"] = scenario.resolve(scenario.model.weights)
        data["model"]["weights"] = "weights.pt"
    spec = scenario.model_spec()
    if spec.factory_file is not None:  # a custom model's file; a module name is the device's
        files[f"model/{spec.factory_file.name}"] = spec.factory_file
        data["model"]["factory"] = spec.with_factory_file(f"model/{spec.factory_file.name}").factory
    for device, link in data["network"].get("links", {}).items():
        if isinstance(link, dict) and "trace" in link:
            files[f"traces/{device}.csv"] = scenario.resolve(link["trace"])
            link["trace"] = f"traces/{device}.csv"
    if data["method"].get("policy"):  # a trained split policy (method erl)
        files["policy.pt"] = scenario.resolve(data["method"]["policy"])
        data["method"]["policy"] = "policy.pt"
    return yaml.safe_dump(data, sort_keys=False), files


def model_json(scenario: Scenario, placed: dict[str, str] | None = None) -> dict[str, Any]:
    """The scenario's model as `halp.model.zoo.ModelSpec` fields (for the probe's digest), its
    files (`halp.runtime.files.model_files`) at the paths `placed` on the device."""
    spec, placed = scenario.model_spec(), placed or {}
    if FACTORY in placed:
        spec = spec.with_factory_file(placed[FACTORY])
    return {"name": spec.name, "width": spec.width, "resolution": spec.resolution,
            "seed": spec.seed, "weights": placed.get(WEIGHTS), "factory": spec.factory,
            "input_shape": list(spec.input_shape) if spec.input_shape else None}
