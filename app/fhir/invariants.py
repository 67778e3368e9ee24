"""FHIR R4 invariants the trial data depends on, which the fhir.resources models do not evaluate.

- qty-3: a Quantity with a unit `code` SHALL carry its `system` (UCUM conversion needs to know whose code).
- per-1: a Period's `start` SHALL NOT be after its `end` (also checked on any start/end pair of dates).
- rng-2: a Range's `low` SHALL NOT exceed its `high` (same units).
- ref-1: a local reference `#id` SHALL resolve to a contained resource.
- obs-6: `dataAbsentReason` only when there is no `value[x]`; obs-7: a component's code differs from
  the Observation's code when the Observation has a value.
"""

from __future__ import annotations

from typing import Any

from app.fhir.dates import date_range
from app.fhir.errors import Issue


def check_invariants(resource: dict[str, Any], clean: frozenset[str] = frozenset()) -> list[Issue]:
    """The invariants' issues; `clean`: top-level keys whose elements are known to pass them, not walked (valid only
    where they do not depend on the rest of the resource: ref-1 does, on `contained`)."""
    resource_type = resource["resourceType"]
    issues: list[Issue] = []
    contained_ids = {c.get("id") for c in resource.get("contained", []) if isinstance(c, dict)}
    walk = _Walk(resource_type, contained_ids, issues)
    if clean:  # the root's own checks see the whole resource; its clean elements are not walked
        walk.check(resource)
        walk.visit({k: v for k, v in resource.items() if k not in clean}, check=False)
    else:
        walk.visit(resource)
    if resource_type == "Observation":
        _observation(resource, issues)
    return issues


class _Walk:
    """One pass over every element. Runs for every resource written: keys and indexes stay raw on the trail
    and an element's path is spelled out only when something is wrong with it."""

    def __init__(self, resource_type: str, contained_ids: set[Any], issues: list[Issue]) -> None:
        self.resource_type = resource_type
        self.contained_ids = contained_ids
        self.issues = issues
        self.trail: list[str | int] = []

    def path(self, *more: str | int) -> str:
        return self.resource_type + "".join(f"[{k}]" if k.__class__ is int else f".{k}" for k in (*self.trail, *more))

    def visit(self, node: dict[str, Any], check: bool = True) -> None:
        if check and node:
            self.check(node)
        trail = self.trail
        for key, child in node.items():
            kind = child.__class__
            if child is None:
                where = self.path(key)
                self.issues.append(
                    Issue("structure", f"{where} is null: FHIR JSON leaves empty elements out.", (where,))
                )
            elif key == "contained":
                continue
            elif kind is dict:
                trail.append(key)
                self.visit(child)
                trail.pop()
            elif kind is list:
                trail.append(key)
                self._items(child)
                trail.pop()

    def _items(self, items: list[Any]) -> None:
        trail = self.trail
        for index, item in enumerate(items):
            kind = item.__class__
            if item is None:
                where = self.path(index)
                self.issues.append(Issue("structure", f"{where} is null: FHIR JSON arrays hold no nulls.", (where,)))
            elif kind is dict or kind is list:
                trail.append(index)
                if kind is dict:
                    self.visit(item)
                else:
                    self._items(item)
                trail.pop()

    def check(self, node: dict[str, Any]) -> None:
        issues = self.issues
        value = node.get("value")
        if isinstance(value, int | float) and not isinstance(value, bool) and "code" in node and "system" not in node:
            issues.append(
                Issue(
                    "invariant",
                    f"{self.path()}: a quantity with a unit code needs its system (qty-3), "
                    "e.g. http://unitsofmeasure.org for UCUM.",
                    (self.path("system"),),
                )
            )
        start, end = node.get("start"), node.get("end")
        if isinstance(start, str) and isinstance(end, str):
            start_range, end_range = date_range(start), date_range(end)
            if start_range and end_range and start_range[0] > end_range[1]:
                issues.append(
                    Issue(
                        "invariant", f"{self.path()}: start {start} is after end {end} (per-1).", (self.path("start"),)
                    )
                )
        low, high = node.get("low"), node.get("high")
        if isinstance(low, dict) and isinstance(high, dict):
            low_value, high_value = low.get("value"), high.get("value")
            if (
                isinstance(low_value, int | float)
                and isinstance(high_value, int | float)
                and low_value > high_value
                and low.get("code") == high.get("code")
                and low.get("unit") == high.get("unit")
            ):
                issues.append(
                    Issue(
                        "invariant",
                        f"{self.path()}: low {low_value} is above high {high_value} (rng-2).",
                        (self.path("low"),),
                    )
                )
        reference = node.get("reference")
        if isinstance(reference, str) and reference.startswith("#") and reference[1:] not in self.contained_ids:
            issues.append(
                Issue(
                    "invariant",
                    f"{self.path()}: local reference {reference} names no contained resource (ref-1).",
                    (self.path("reference"),),
                )
            )


def _codings(element: dict[str, Any]) -> set[tuple[Any, Any]]:
    """(system, code) of each coding of the element's `code`. An explicit null (`"coding": null`) is reported by the
    conformance checks, which run beside these: here it reads as no coding, never as a crash."""
    code = element.get("code")
    codings = code.get("coding") if isinstance(code, dict) else None
    return {(c.get("system"), c.get("code")) for c in codings or () if isinstance(c, dict)}


def _observation(resource: dict[str, Any], issues: list[Issue]) -> None:
    has_value = any(k.startswith("value") for k in resource)
    if has_value and "dataAbsentReason" in resource:
        issues.append(
            Issue(
                "invariant",
                "Observation: dataAbsentReason is only for an Observation without a value (obs-6).",
                ("Observation.dataAbsentReason",),
            )
        )
    if not has_value:
        return
    own = _codings(resource)
    for index, component in enumerate(resource.get("component") or ()):
        codes = _codings(component) if isinstance(component, dict) else set()
        if codes & own:
            issues.append(
                Issue(
                    "invariant",
                    "Observation: a component repeats the Observation's own code while the "
                    "Observation has a value (obs-7).",
                    (f"Observation.component[{index}].code",),
                )
            )
