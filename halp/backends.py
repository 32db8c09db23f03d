"""Backends by name, loaded lazily so that the core never imports them.

Every backend is a `Backend`: `check(scenario)` refuses, in one line and before anything is
written, a scenario it cannot run here (no root, a qdisc this kernel lacks, a device without an
address); `run(scenario, policy, writer)` serves each request of the scenario's workload with
the plan the policy answers, writes every op and request into `writer` as it finishes, and
returns the trace. A backend adds no method logic: the plans are the policy's.

Some backends have more to offer: the emulator can hold a process to a share of a core
(`QuotaRunner`), which is where the profile of an emulated device is measured.
"""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

from halp.errors import BackendError
from halp.policy import Policy
from halp.scenario import Scenario
from halp.trace import Trace, TraceWriter

BACKENDS = {
    "sim": ("sim.backend", "the simulator needs simpy: pip install simpy"),
    "emu": ("emu.backend", "the emulator needs Mininet: run `make setup` as root"),
    "hw": ("hw.backend", "the hardware backend needs the project installed with its hw extra"),
}


@runtime_checkable
class Backend(Protocol):
    name: str

    def check(self, scenario: Scenario) -> None:
        """Raise `BackendError` if `scenario` cannot run on this backend here at all."""
        ...

    def run(self, scenario: Scenario, policy: Policy, writer: TraceWriter) -> Trace:
        """Serve the workload with `policy`'s plans; the records also go to `writer`, as each
        request finishes, so a failure leaves what finished on disk."""
        ...


@runtime_checkable
class QuotaRunner(Protocol):
    """A backend that can run `halp` commands held to a share of one core."""

    def run_limited(self, args: list[str], cpu_share: float, threads: int = 1) -> int:
        """Run `halp ARGS...` held to `cpu_share` of a core; its exit code."""
        ...

    def probe_limited(self, cpu_share: float, threads: int = 1) -> dict[str, float]:
        """The machine probe (`halp.latency.probe`) taken held to `cpu_share` of a core."""
        ...


def load_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")
    module_name, hint = BACKENDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module_name or module_name.startswith(exc.name + ".")):
            raise BackendError(f"backend {name!r} is not available in this checkout") from None
        raise BackendError(f"backend {name!r} cannot load ({exc}); {hint}") from None
    backend = module.BACKEND
    assert isinstance(backend, Backend), f"{module_name}.BACKEND is not a Backend"
    return backend


def ready_backend(name: str, scenario: Scenario) -> Backend:
    """The backend `name`, once it has said it can run `scenario` here."""
    backend = load_backend(name)
    backend.check(scenario)
    return backend


def quota_runner(name: str = "emu") -> QuotaRunner:
    """The backend `name` as a `QuotaRunner`, or one line saying it cannot hold a share."""
    backend = load_backend(name)
    if not isinstance(backend, QuotaRunner):
        raise BackendError(f"backend {name!r} cannot hold a process to a share of a core")
    return backend
