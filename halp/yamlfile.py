"""The one YAML reader for what users write: scenarios, profiles and `--set` values.

YAML is rich enough to hurt: a file that is not UTF-8 text, a mapping nested thousands deep
(Python's recursion limit), aliases that expand a few lines into billions of items ("billion
laughs"), a key written twice of which the last silently wins. This reader refuses each of
those in one line naming the source and, where known, the line; otherwise it reads what
`yaml.safe_load` reads (plain data only: no tag constructs an object).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent, MappingStartEvent, SequenceStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode

from halp.errors import HalpError
from halp.userfiles import MB, read_limited

MAX_YAML_BYTES = 1 * MB  # a scenario or a profile is a few kB
MAX_DEPTH = 64  # nesting of mappings and lists; a scenario needs five
MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlError(HalpError):
    """A YAML source refused: the message names the source, the line where known, and why."""


class YamlSyntaxError(YamlError):
    """Not YAML at all (rather than YAML this reader refuses): `--set` then takes the text as
    a plain string."""


class _Refused(yaml.YAMLError):
    """Raised inside the loader; `mark` says where."""

    def __init__(self, mark: Any, reason: str):
        super().__init__(reason)
        self.mark, self.reason = mark, reason


class _SafeLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` without anchors or aliases, with bounded depth and unique keys."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        if isinstance(event, AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(event.start_mark, "YAML anchors and aliases (&name, *name) are not "
                                             "allowed; write the value out")
        nests = isinstance(event, MappingStartEvent | SequenceStartEvent)
        if nests:
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise _Refused(event.start_mark, f"nested more than {MAX_DEPTH} levels deep")
        try:
            return super().compose_node(parent, index)
        finally:
            if nests:
                self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            key = self.construct_object(key_node)
            try:
                seen = key in first
            except TypeError:  # an unhashable key: the constructor below says so
                continue
            if seen:
                raise _Refused(key_node.start_mark,
                               f"duplicate key {_shown(key)} (first at line {first[key]})")
            first[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:  # int('9' * 5000), a date 2024-13-45
            value = node.value if isinstance(node, ScalarNode) else node.tag
            reason = _first_line(exc).split(";")[0]  # not Python's advice on its own limits
            raise _Refused(node.start_mark, f"cannot read {_shown(value)}: {reason}") from None

    def construct_undefined(self, node: Node) -> Any:
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise _Refused(node.start_mark, f"the tag {tag} is not allowed (plain data only)")


_SafeLoader.add_constructor(None, _SafeLoader.construct_undefined)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _line_of(mark: Any) -> str:
    return f"line {mark.line + 1}" if mark is not None else ""


def parse_yaml(text: str, source: str) -> Any:
    """The data of YAML `text`; `source` names it in a refusal (a file, `--set KEY`)."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise YamlError(f"{source}: longer than {MAX_YAML_BYTES // MB} MB")
    loader = None
    try:
        loader = _SafeLoader(text)
        return loader.get_single_data()
    except _Refused as exc:
        where = _line_of(exc.mark)
        raise YamlError(f"{source}: {where}: {exc.reason}" if where
                        else f"{source}: {exc.reason}") from None
    except yaml.MarkedYAMLError as exc:
        where = _line_of(exc.problem_mark or exc.context_mark)
        problem = (str(exc.problem or exc.context or "").strip().splitlines() or ["?"])[0]
        raise YamlSyntaxError(f"{source}: not valid YAML at {where}: {problem}" if where
                              else f"{source}: not valid YAML: {problem}") from None
    except yaml.reader.ReaderError as exc:  # a control character: binary, not text
        line = text.count("\n", 0, exc.position) + 1
        raise YamlSyntaxError(f"{source}: not valid YAML at line {line}: character "
                              f"#x{exc.character:04x} is not allowed (binary data?)") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(f"{source}: not valid YAML: {_first_line(exc)}") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml(path: str | Path, max_bytes: int = MAX_YAML_BYTES) -> Any:
    """The data of the YAML file `path`: a regular file of at most `max_bytes`, UTF-8 text,
    parsed by `parse_yaml`. Every refusal is a `YamlError` naming the file."""
    try:
        data = read_limited(path, max_bytes)
    except HalpError as exc:
        raise YamlError(str(exc)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise YamlError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}); "
                        "save it as UTF-8") from None
    return parse_yaml(text, str(path))
