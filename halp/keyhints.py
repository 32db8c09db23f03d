"""Which key an unknown key was meant to be: `netwrok` is a misspelled `network`.

Pydantic reports a misspelled key twice, as an unknown key and as its real name missing, and
lists the missing one first. Here the unknown key is matched against the keys the model takes
at the same place, so the message can name both.
"""

from __future__ import annotations

import difflib
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Tag

CLOSE = 0.7  # difflib's similarity above which an unknown key is taken for a misspelling

Location = tuple[int | str, ...]


def unknown_key(root: type[BaseModel], loc: Location, errors: list[Any],
                also: tuple[str, ...] = ()) -> str:
    """The message for the unknown key at `loc`: the key it resembles, and whether that key is
    required and missing; else the keys known there. `also`: more keys taken there."""
    missing = missing_near(loc, errors)
    if missing:
        return f"unknown key (did you mean {missing}? it is required and missing)"
    known = [*also, *keys_at(root, loc[:-1])]
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=CLOSE)
    if close:
        return f"unknown key (did you mean {close[0]}?)"
    return f"unknown key; known here: {', '.join(known)}" if known else "unknown key (misspelled?)"


def missing_near(loc: Location, errors: list[Any]) -> str | None:
    """The required key, missing beside the unknown key at `loc`, that it resembles."""
    missing = [str(e["loc"][-1]) for e in errors
               if e["type"] == "missing" and tuple(e["loc"][:-1]) == tuple(loc[:-1])]
    close = difflib.get_close_matches(str(loc[-1]), missing, n=1, cutoff=CLOSE)
    return close[0] if close else None


def keys_at(root: type[BaseModel], loc: Location) -> list[str]:
    """The keys `root` takes at a pydantic error location (empty when unsure)."""
    node: Any = root
    for part in loc:
        node = _child(node, part)
        if node is None:
            return []
    node = _plain(node)
    if isinstance(node, type) and issubclass(node, BaseModel):
        return [k for k, field in node.model_fields.items() if not field.exclude]
    return []


def _plain(annotation: Any) -> Any:
    """An annotation without `Annotated[...]` and without `| None`."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
            continue
        if get_origin(annotation) in (Union, UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) == 1:
                annotation = args[0]
                continue
        return annotation


def _child(annotation: Any, part: int | str) -> Any:
    """The annotation one step down a location: a field, an item, a tagged union's member."""
    node = _plain(annotation)
    if isinstance(node, type) and issubclass(node, BaseModel):
        field = node.model_fields.get(str(part))
        return field.annotation if field else None
    origin = get_origin(node)
    if origin in (list, tuple) and isinstance(part, int):
        return get_args(node)[0]
    if origin is dict:
        return get_args(node)[1]
    if origin in (Union, UnionType):  # the location names the member by its tag
        for member in get_args(node):
            metadata = get_args(member)[1:] if get_origin(member) is Annotated else ()
            model = _plain(member)
            name = getattr(model, "model_fields", {}).get("name")  # a `name: Literal[...]` tag
            if any(isinstance(m, Tag) and m.tag == part for m in metadata) \
                    or (name is not None and part in get_args(name.annotation)):
                return model
    return None
