"""Finding and rewriting the `reference` strings inside a resource (for transaction bundles)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ReferenceSite = tuple[dict[str, Any], str]  # the Reference-shaped dict, and its FHIRPath location


def find_references(resource: Any, path: str) -> list[ReferenceSite]:
    """Every Reference-shaped dict (one with a string `reference`) below `resource`, with its location.

    On the ingest hot path: the location string is only built for the dicts that hold a reference.
    """
    found: list[ReferenceSite] = []
    trail: list[str] = [path]

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("reference"), str):
                found.append((node, "".join(trail)))
            for key, value in node.items():
                if isinstance(value, dict | list):
                    trail.append(f".{key}")
                    visit(value)
                    trail.pop()
        else:
            for index, item in enumerate(node):
                if isinstance(item, dict | list):
                    trail.append(f"[{index}]")
                    visit(item)
                    trail.pop()

    if isinstance(resource, dict | list):
        visit(resource)
    return found


def rewrite_references(sites: list[ReferenceSite], resolve: Callable[[str, str], str | None]) -> None:
    """Replace each reference for which `resolve(reference, location)` returns a new value, in place."""
    for holder, location in sites:
        replacement = resolve(holder["reference"], location)
        if replacement is not None:
            holder["reference"] = replacement
