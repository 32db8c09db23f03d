"""A model file that is not Python."""

def build(:
    pass
