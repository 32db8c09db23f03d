"""Backends by name, loaded lazily so the core never imports them.

A backend module has `run(scenario, policy, writer) -> Trace`: it serves each request of the
scenario's workload with the plan the policy answers, and records every op.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from halp.errors import BackendError

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
