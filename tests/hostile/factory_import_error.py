"""A model file that imports a module that does not exist."""

import no_such_module_for_halp  # noqa: F401


def build():
    return None
