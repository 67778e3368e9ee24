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


def check_invariants(resource: dict[str, Any]) -> list[Issue]:
    resource_type = resource["resourceType"]
    issues: list[Issue] = []
    contained_ids = {c.get("id") for c in resource.get("contained", []) if isinstance(c, dict)}
    _walk(resource, resource_type, contained_ids, issues)
    if resource_type == "Observation":
        _observation(resource, issues)
    return issues


def _walk(node: Any, path: str, contained_ids: set[Any], issues: list[Issue]) -> None:
    if isinstance(node, list):
        for index, item in enumerate(node):
            if item is None:
                issues.append(
                    Issue(
                        "structure", f"{path}[{index}] is null: FHIR JSON arrays hold no nulls.", (f"{path}[{index}]",)
                    )
                )
            _walk(item, f"{path}[{index}]", contained_ids, issues)
        return
    if not isinstance(node, dict):
        return
    value = node.get("value")
    if isinstance(value, int | float) and not isinstance(value, bool) and "code" in node and "system" not in node:
        issues.append(
            Issue(
                "invariant",
                f"{path}: a quantity with a unit code needs its system (qty-3), "
                "e.g. http://unitsofmeasure.org for UCUM.",
                (f"{path}.system",),
            )
        )
    start, end = node.get("start"), node.get("end")
    if isinstance(start, str) and isinstance(end, str):
        start_range, end_range = date_range(start), date_range(end)
        if start_range and end_range and start_range[0] > end_range[1]:
            issues.append(Issue("invariant", f"{path}: start {start} is after end {end} (per-1).", (f"{path}.start",)))
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
                Issue("invariant", f"{path}: low {low_value} is above high {high_value} (rng-2).", (f"{path}.low",))
            )
    reference = node.get("reference")
    if isinstance(reference, str) and reference.startswith("#") and reference[1:] not in contained_ids:
        issues.append(
            Issue(
                "invariant",
                f"{path}: local reference {reference} names no contained resource (ref-1).",
                (f"{path}.reference",),
            )
        )
    for key, child in node.items():
        if child is None:
            issues.append(
                Issue("structure", f"{path}.{key} is null: FHIR JSON leaves empty elements out.", (f"{path}.{key}",))
            )
        elif key != "contained" and isinstance(child, dict | list):
            _walk(child, f"{path}.{key}", contained_ids, issues)


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
    own = {(c.get("system"), c.get("code")) for c in (resource.get("code") or {}).get("coding", [])}
    for index, component in enumerate(resource.get("component", [])):
        codes = {(c.get("system"), c.get("code")) for c in (component.get("code") or {}).get("coding", [])}
        if codes & own:
            issues.append(
                Issue(
                    "invariant",
                    "Observation: a component repeats the Observation's own code while the "
                    "Observation has a value (obs-7).",
                    (f"Observation.component[{index}].code",),
                )
            )
