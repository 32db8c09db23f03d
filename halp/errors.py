"""Errors that the CLI prints as one line: what, where, and what to do.

Anything raised as a `HalpError` is an expected failure (bad input, missing dependency, dead
device). The CLI catches it and prints `str(error)` without a traceback; anything else is a bug.
"""


class HalpError(Exception):
    """An expected failure with a message meant for the user."""


class ScenarioError(HalpError):
    """A scenario file is malformed: the message names the file, the field and the reason."""


class ModelError(HalpError):
    """A model cannot be built or cannot be partitioned by rows."""


class PlanError(HalpError):
    """A plan breaks the contract (missing input, wrong device, rows not covered)."""


class BackendError(HalpError):
    """A backend cannot run here (missing privilege, package) or a device failed mid-run."""
