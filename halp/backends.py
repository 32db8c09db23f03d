"""Backends by name, loaded lazily so the core never imports them.

A backend module has `run(scenario, policy, writer) -> Trace`: it serves each request of the
scenario's workload with the plan the policy answers, and records every op. It may have
`check(scenario)`, which raises `BackendError` when the scenario cannot run here at all (no
root, a qdisc this kernel lacks), so that commands refuse before they write anything.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from halp.errors import BackendError

if TYPE_CHECKING:
    from halp.scenario import Scenario

BACKENDS = {
    "sim": ("sim.backend", "the simulator needs simpy: pip install simpy"),
    "emu": ("emu.backend", "the emulator needs Mininet: run `make emu-deps` as root"),
    "hw": ("hw.backend", "the hardware backend needs the project installed with its hw extra"),
}


def load_backend(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")
    module_name, hint = BACKENDS[name]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module_name or module_name.startswith(exc.name + ".")):
            raise BackendError(f"backend {name!r} is not available in this checkout") from None
        raise BackendError(f"backend {name!r} cannot load ({exc}); {hint}") from None


def ready_backend(name: str, scenario: Scenario) -> ModuleType:
    """The backend `name`, once it has said it can run `scenario` here."""
    module = load_backend(name)
    check = getattr(module, "check", None)
    if check is not None:
        check(scenario)
    return module
