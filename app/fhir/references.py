"""Finding and rewriting the `reference` strings inside a resource (for transaction bundles), and telling
references to this server from references to others."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from app.fhir.errors import Issue

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


class BundleReferences:
    """Resolves the references of a transaction's resources that need no database: the fullUrls of the
    bundle's own entries (`id_map`: fullUrl -> `Type/id`) and absolute references to this server (stored
    relative). A `urn:uuid:` / `urn:oid:` naming no entry is an issue.

    Pure, so the validation workers apply it to the resources they check (see `may_hold_conditional_references`
    for when that is allowed); conditional references (`Patient?identifier=...`) need the database and are
    resolved by the request thread, before anything is written."""

    def __init__(self, id_map: Mapping[str, str], base_url: str) -> None:
        self.id_map = id_map
        self.base = base_url.rstrip("/") + "/"

    def resolve(self, reference: str, location: str) -> tuple[str | None, Issue | None]:
        """(the rewritten reference, or None to leave it as it is; the issue when it cannot be resolved)."""
        mapped = self.id_map.get(reference)
        if mapped is not None:
            return mapped, None
        if reference.startswith(("urn:uuid:", "urn:oid:")):
            return None, Issue(
                "not-found",
                f"The reference {reference!r} names no entry's fullUrl in this bundle; add that entry or use Type/id.",
                (f"{location}.reference",),
            )
        return local_reference(reference, self.base), None

    def conditional(self, reference: str) -> str | None:
        """`Type?query` when `reference` is a conditional reference (relative, or on this server's base)."""
        if reference.startswith(self.base):
            reference = reference[len(self.base) :]
        if "?" not in reference or reference.startswith("#"):
            return None
        return reference

    def rewrite(self, resource: Any, path: str) -> list[Issue]:
        """Rewrite, in place, every reference of `resource` that needs no database; what could not be resolved.
        Raises on a conditional reference: the bundle was judged free of them (`may_hold_conditional_references`),
        and storing one unresolved would be worse than failing."""
        issues: list[Issue] = []
        for holder, location in find_references(resource, path):
            reference = holder["reference"]
            replacement, issue = self.resolve(reference, location)
            if replacement is not None:
                holder["reference"] = replacement
            elif issue is not None:
                issues.append(issue)
            elif self.conditional(reference) is not None:
                raise RuntimeError(f"conditional reference at {location} left to the checks: {reference[:200]!r}")
        return issues


# An escaped ASCII letter, with which a key could spell "reference" without the letters appearing as such.
_ESCAPED_LETTER = re.compile(rb"\\u00(?:[46][1-9a-fA-F]|[57][0-9aA])")
# A "reference" key whose string value holds a '?' (as itself or escaped) before its closing quote.
_CONDITIONAL_REFERENCE = re.compile(rb'"reference"\s*:\s*"(?:[^"\\?]|\\[^u]|\\u(?!003[fF]))*(?:\?|\\u003[fF])')


def may_hold_conditional_references(body: bytes) -> bool:
    """Could this JSON text (a bundle as received) hold a conditional reference, i.e. a `reference` string with
    a '?'? False is certain, so the bundle's references can all be resolved without the database, where the
    resources are checked; True sends the bundle the long way (every reference resolved by the request thread
    before anything is written). Costs a scan or two of the bytes in C (~0.3 ms for 600 kB without a '?')."""
    if b"?" not in body and b"\\u003" not in body:  # no '?' as itself nor escaped (\u003f): C-speed scans
        return False
    if b"\\u00" in body and _ESCAPED_LETTER.search(body) is not None:
        return True
    return _CONDITIONAL_REFERENCE.search(body) is not None
