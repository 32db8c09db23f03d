"""Names that end up in paths (a scenario's name in its run folder, a profile's file): short,
plain, and unable to climb out of the folder they are put in.

A safe name is letters, digits, `_`, `.` and `-`, at most 64 characters, and starts with a
letter, digit or `_`: no `/`, no `..`, no hidden file, no leading `-` that a command would
read as an option.
"""

from __future__ import annotations

import re

SAFE_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
SAFE_NAME_RULE = "letters, digits, _ . -, not starting with . or -, at most 64 characters"


def is_safe_name(text: str) -> bool:
    return re.fullmatch(SAFE_NAME, text) is not None
