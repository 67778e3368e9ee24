"""Finding and rewriting the `reference` strings inside a resource (for transaction bundles), and telling
references to this server from references to others."""

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


def local_reference(reference: str, base_url: str) -> str | None:
    """`Type/id` (or `Type/id/_history/v`) for an absolute URL on this server's FHIR base, else None.

    Stored and indexed relative: an absolute reference that stays absolute points at another server, and is
    indexed as a URL only, never as a local `Type/id` (it must not pull a resource into a local patient's
    compartment, nor match a search for a local resource)."""
    base = base_url.rstrip("/") + "/"
    if not reference.startswith(base):
        return None
    relative = reference[len(base) :]
    if "?" in relative or "#" in relative:  # a conditional reference or a fragment: not a plain Type/id
        return None
    parts = relative.split("/")
    if len(parts) in (2, 4) and parts[0][:1].isupper() and parts[1] and (len(parts) == 2 or parts[2] == "_history"):
        return relative
    return None


def localize_references(resource: Any, base_url: str) -> None:
    """Rewrite, in place, every absolute reference to this server into its relative form."""
    rewrite_references(find_references(resource, ""), lambda reference, _: local_reference(reference, base_url))
