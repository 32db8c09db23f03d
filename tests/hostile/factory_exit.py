"""A factory that ends the process it runs in."""


def build():
    exit()
