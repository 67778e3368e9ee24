"""YAML specs loaded strictly: every validation error names the file, the line and the field.

PyYAML's composed node tree keeps each node's position; we record the line of every mapping key and
sequence item by its path, so a pydantic error at ``("arms", 1, "type")`` becomes ``depil-2.yaml:42``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)
Path_ = tuple[str | int, ...]


class SpecError(ValueError):
    """A spec file that cannot be used; the message names the file, line and reason of every problem."""

    def __init__(self, path: Path, problems: Sequence[tuple[int | None, str]]) -> None:
        self.path = path
        self.problems = list(problems)
        lines = [f"{path}:{line}: {reason}" if line else f"{path}: {reason}" for line, reason in self.problems]
        super().__init__("\n".join(lines))


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (YAML silently keeps the last one, hiding typos)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    mapping: dict[Any, Any] = loader.construct_mapping(node, deep=deep)  # a dict; Any to mypy without the stubs
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# Dates stay strings: the models parse them, and FHIR wants the text as written.
_UniqueKeyLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _lines(node: yaml.Node, path: Path_, out: dict[Path_, int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*path, key_node.value)
            _lines(value_node, child, out)
            out[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _lines(item, (*path, index), out)


def _line_of(lines: dict[Path_, int], loc: Path_) -> int | None:
    # pydantic adds union-member names and other non-path parts to `loc`: use the longest known prefix.
    for end in range(len(loc), -1, -1):
        found = lines.get(tuple(loc[:end]))
        if found is not None:
            return found
    return None


def load_yaml(path: Path) -> tuple[Any, dict[Path_, int]]:
    """The parsed document and the line of every element path; SpecError on malformed YAML."""
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=_UniqueKeyLoader)
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise SpecError(path, [(mark.line + 1 if mark else None, f"{exc.problem or exc}")]) from None
    lines: dict[Path_, int] = {}
    if node is not None:
        _lines(node, (), lines)
    return data, lines


def load_model(path: Path, model: type[Model]) -> Model:
    """Load a YAML file into a strict pydantic model; SpecError listing every problem with its line."""
    data, lines = load_yaml(path)
    try:
        return model.model_validate(data, context={"source": path})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            where = ".".join(str(part) for part in loc) or "(document)"
            problems.append((_line_of(lines, loc), f"{where}: {error['msg']}"))
        raise SpecError(path, problems) from None
