"""A factory that kills the process it runs in, past any exception handler."""

import os


def build():
    os._exit(0)
