"""Finding and rewriting the `reference` strings inside a resource (for transaction bundles), and telling
references to this server from references to others."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ReferenceSite = tuple[dict[str, Any], str]  # the Reference-shaped dict, and its FHIRPath location


def find_references(resource: Any, path: str) -> list[ReferenceSite]:
    """Every Reference-shaped dict (one with a string `reference`) below `resource`, with its location.

    On the ingest hot path (every entry of every bundle): keys and indexes are kept raw on the trail and the
    location string is built only for the dicts that hold a reference. FHIR JSON has no arrays of arrays
    (the models reject them), so an array's items are only searched when they are objects.
    """
    found: list[ReferenceSite] = []
    trail: list[str | int] = []

    def visit(node: dict[str, Any]) -> None:
        if node.get("reference").__class__ is str:
            found.append((node, path + "".join(f"[{k}]" if k.__class__ is int else f".{k}" for k in trail)))
        for key, value in node.items():
            kind = value.__class__
            if kind is dict:
                trail.append(key)
                visit(value)
                trail.pop()
            elif kind is list:
                trail.append(key)
                for index, item in enumerate(value):
                    if item.__class__ is dict:
                        trail.append(index)
                        visit(item)
                        trail.pop()
                trail.pop()

    if isinstance(resource, dict):
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
