"""Walking and rewriting the `reference` strings inside a resource (for transaction bundles)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


def iter_references(node: Any, path: str) -> Iterator[tuple[dict[str, Any], str]]:
    """Yield every Reference-shaped dict (one with a string `reference`) and its FHIRPath location."""
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node, path
        for key, value in node.items():
            if isinstance(value, dict | list):
                yield from iter_references(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            if isinstance(item, dict | list):
                yield from iter_references(item, f"{path}[{index}]")


def rewrite_references(resource: dict[str, Any], path: str, resolve: Callable[[str, str], str | None]) -> None:
    """Replace each reference for which `resolve(reference, location)` returns a new value, in place."""
    for holder, location in iter_references(resource, path):
        replacement = resolve(holder["reference"], location)
        if replacement is not None:
            holder["reference"] = replacement
