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


def shown(value: object, limit: int = 40) -> str:
    """`repr(value)` cut to `limit` characters: a message quotes what it refuses, but a hostile
    file's 10 MB string must not become a 10 MB line."""
    try:
        text = repr(value)
    except ValueError:  # an int longer than Python prints (sys.get_int_max_str_digits)
        text = f"<a {value.bit_length()}-bit integer>" if isinstance(value, int) else "<?>"
    return text if len(text) <= limit else f"{text[:limit - 3]}..."
