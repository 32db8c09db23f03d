"""A factory that fails, with a message of several lines."""


def build():
    raise ValueError("no layers here\nsecond line the user need not read")
