"""HALP testbed: collaborative CNN inference on edge devices.

The core package. It holds the scenario, the model graph, the latency model, the planners,
the plan (the contract between planners and backends), the runtime shared by the emulator and
the hardware backend, traces and reports. It imports no backend.
"""

__version__ = "0.1.0"
