"""The project's CodeSystems and alias ConceptMaps (mappings/terminology): loaded, published, applied on writes."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from app.fhir import bundle, ucum
from app.fhir.errors import FhirError
from app.fhir.systems import MEASURE as MEASURE_SYSTEM
from app.fhir.validation import parse_json, validate_resource
from app.mapping.concept_maps import ConceptMapIndex
from app.store.repository import Store

TERMINOLOGY_TYPES = ("CodeSystem", "ConceptMap")
# Where codings are normalised: the codes searches and eligibility look at. Kept to Observation because
# `normalize` runs on every write, and only Observation codes have aliases today.
_NORMALIZED_TYPES = frozenset({"Observation"})
_INSTALL_ATTEMPTS = 3  # start-up PUTs racing another process's (several replicas) get a 409: retry


class TerminologyError(ValueError):
    """A terminology file that cannot be used; the message starts with the file."""


@dataclass(frozen=True, slots=True)
class Measure:
    """One concept of the measure CodeSystem: what the imports need to write and check a value."""

    code: str
    display: str
    unit: str | None
    min: Decimal | None
    max: Decimal | None


# Only rows where data under the source code is data of the target code are applied on write: an `inexact`
# or `narrower` alias (SLEDAI-2K for SELENA-SLEDAI) would make a search or a criterion count the wrong scale.
SAFE_EQUIVALENCES = frozenset({"equal", "equivalent", "wider", "subsumes"})


class Terminology:
    """Validated CodeSystems and ConceptMaps, with the alias table `normalize` applies."""

    def __init__(self, resources: Iterable[dict[str, Any]]) -> None:
        self._resources = list(resources)
        self.concept_maps = ConceptMapIndex(r for r in self._resources if r["resourceType"] == "ConceptMap")
        self._measures = {m.code: m for r in self._resources if r.get("url") == MEASURE_SYSTEM for m in _measures(r)}
        displays = {
            (r["url"], c["code"]): c.get("display")
            for r in self._resources
            if r["resourceType"] == "CodeSystem"
            for c in r.get("concept", [])
        }
        # (system, code) -> canonical codings to append. Precomputed: `normalize` is on the ingest hot path.
        self._aliases: dict[tuple[str, str], tuple[dict[str, str], ...]] = {}
        for (system, code), translations in self.concept_maps.items():
            targets: list[dict[str, str]] = []
            for t in translations:
                if t.equivalence not in SAFE_EQUIVALENCES:
                    continue
                coding = {"system": t.system, "code": t.code}
                display = t.display or displays.get((t.system, t.code))
                if display:
                    coding["display"] = display
                if coding not in targets:
                    targets.append(coding)
            self._aliases[(system, code)] = tuple(targets)

    def resources(self) -> list[dict[str, Any]]:
        """The CodeSystems and ConceptMaps to publish (copies: callers may rewrite them)."""
        return copy.deepcopy(self._resources)

    def measure(self, code: str) -> Measure:
        """A measure code's display, UCUM unit and valid range; KeyError for an unknown code."""
        return self._measures[code]

    def measures(self) -> list[Measure]:
        return list(self._measures.values())

    def normalize(self, resource_type: str, resource: dict[str, Any]) -> dict[str, Any]:
        """Append the canonical coding after any coding that is an alias; the same dict when nothing matches.

        Never mutates `resource` (bundles validate it concurrently); the original codings stay first.
        """
        if resource_type not in _NORMALIZED_TYPES or not self._aliases:
            return resource
        code = resource.get("code")
        new_code = self._concept(code)
        components = resource.get("component")
        new_components: list[Any] | None = None
        if isinstance(components, list):
            for i, component in enumerate(components):
                if not isinstance(component, dict):
                    continue
                component_code = component.get("code")
                new_component_code = self._concept(component_code)
                if new_component_code is not component_code:
                    if new_components is None:
                        new_components = list(components)
                    new_components[i] = {**component, "code": new_component_code}
        if new_code is code and new_components is None:
            return resource
        normalized = dict(resource)
        if new_code is not code:
            normalized["code"] = new_code
        if new_components is not None:
            normalized["component"] = new_components
        return normalized

    def _concept(self, concept: Any) -> Any:
        """A CodeableConcept with the canonical codings of its aliases appended, or the same object."""
        if not isinstance(concept, dict):
            return concept
        codings = concept.get("coding")
        if not isinstance(codings, list):
            return concept
        added: list[dict[str, str]] | None = None
        for coding in codings:
            if not isinstance(coding, dict):
                continue
            system, code = coding.get("system"), coding.get("code")
            if not isinstance(system, str) or not isinstance(code, str):
                continue
            targets = self._aliases.get((system, code))
            if targets:
                added = added or []
                added.extend(t for t in targets if t not in added)
        if not added:
            return concept
        present = {(c.get("system"), c.get("code")) for c in codings if isinstance(c, dict)}
        missing = [dict(t) for t in added if (t["system"], t["code"]) not in present]
        if not missing:
            return concept
        return {**concept, "coding": [*codings, *missing]}


def load_terminology(mappings_dir: Path) -> Terminology:
    """Every CodeSystem-*.json and ConceptMap-*.json under mappings_dir/terminology, validated and cross-checked.

    Raises TerminologyError naming the file: a bad file stops start-up rather than silently mapping nothing.
    """
    directory = mappings_dir / "terminology"
    paths = sorted(p for kind in TERMINOLOGY_TYPES for p in directory.glob(f"{kind}-*.json"))
    if not paths:
        raise TerminologyError(f"{directory}: no CodeSystem-*.json or ConceptMap-*.json files")
    resources: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], Path] = {}
    for path in paths:
        resource = _load_file(path)
        for key in ((resource["resourceType"], resource["id"]), (resource["resourceType"], resource["url"])):
            if key in seen:
                raise TerminologyError(f"{path}: {key[0]} {key[1]!r} is also defined by {seen[key]}")
            seen[key] = path
        resources.append(resource)
    code_systems = {r["url"]: r for r in resources if r["resourceType"] == "CodeSystem"}
    if MEASURE_SYSTEM not in code_systems:
        raise TerminologyError(f"{directory}: no CodeSystem with url {MEASURE_SYSTEM}")
    for path, resource in zip(paths, resources, strict=True):
        if resource["resourceType"] == "CodeSystem":
            _check_code_system(path, resource)
        else:
            _check_concept_map(path, resource, code_systems)
    return Terminology(resources)


def _load_file(path: Path) -> dict[str, Any]:
    kind = path.name.split("-", 1)[0]
    try:
        resource = parse_json(path.read_bytes(), str(path))
        validate_resource(resource, expected_type=kind)
    except FhirError as exc:
        # Model issues already start with their FHIRPath; conformance ones may not.
        details = "; ".join(
            i.diagnostics
            if not i.expression or i.diagnostics.startswith(i.expression[0])
            else f"{i.expression[0]}: {i.diagnostics}"
            for i in exc.issues
        )
        raise TerminologyError(f"{path}: {details}") from None
    assert isinstance(resource, dict)
    for required in ("id", "url"):
        if not isinstance(resource.get(required), str):
            raise TerminologyError(f"{path}: {kind}.{required} is required (it is published and referred to by it)")
    return resource


def _properties(concept: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for prop in concept.get("property", []):
        value = next((v for k, v in prop.items() if k.startswith("value")), None)
        values[prop["code"]] = value
    return values


def _measures(code_system: dict[str, Any]) -> Iterable[Measure]:
    for concept in code_system.get("concept", []):
        props = _properties(concept)
        low, high = props.get("min"), props.get("max")
        yield Measure(
            concept["code"],
            concept.get("display", concept["code"]),
            props.get("unit"),
            None if low is None else Decimal(str(low)),
            None if high is None else Decimal(str(high)),
        )


def _check_code_system(path: Path, code_system: dict[str, Any]) -> None:
    declared = {p["code"] for p in code_system.get("property", [])}
    codes: set[str] = set()
    for concept in code_system.get("concept", []):
        code = concept["code"]
        if code in codes:
            raise TerminologyError(f"{path}: code {code!r} is defined twice")
        codes.add(code)
        props = _properties(concept)
        undeclared = sorted(set(props) - declared)
        if undeclared:
            raise TerminologyError(f"{path}: code {code!r} uses undeclared properties {undeclared}")
        unit = props.get("unit")
        if unit is not None and not ucum.is_valid(unit):
            raise TerminologyError(f"{path}: code {code!r} has unit {unit!r}, which is not UCUM")
        if code_system["url"] == MEASURE_SYSTEM and unit is None:
            raise TerminologyError(f"{path}: measure {code!r} has no unit property")
        low, high = props.get("min"), props.get("max")
        if (low is None) != (high is None) or (low is not None and low > high):
            raise TerminologyError(f"{path}: code {code!r} has an invalid range min={low!r} max={high!r}")


def _check_concept_map(path: Path, concept_map: dict[str, Any], code_systems: dict[str, dict[str, Any]]) -> None:
    """Codes on either side that belong to a CodeSystem published here must exist in it, with its display."""
    displays = {url: {c["code"]: c.get("display") for c in cs.get("concept", [])} for url, cs in code_systems.items()}
    for g, group in enumerate(concept_map.get("group", [])):
        source, target = group.get("source"), group.get("target")
        if not source or not target:
            raise TerminologyError(f"{path}: ConceptMap.group[{g}] needs both source and target systems")
        for e, element in enumerate(group.get("element", [])):
            where = f"ConceptMap.group[{g}].element[{e}]"
            _check_code(path, where, displays.get(source), element.get("code"), element.get("display"))
            for t, mapped in enumerate(element.get("target", [])):
                if mapped.get("equivalence") not in ("unmatched", "disjoint"):
                    code, display = mapped.get("code"), mapped.get("display")
                    _check_code(path, f"{where}.target[{t}]", displays.get(target), code, display)


def _check_code(path: Path, where: str, known: dict[str, str | None] | None, code: Any, display: Any) -> None:
    if code is None:
        raise TerminologyError(f"{path}: {where} has no code")
    if known is None:  # a system published elsewhere (LOINC, a hospital's): nothing to check against
        return
    if code not in known:
        raise TerminologyError(f"{path}: {where}.code {code!r} is not in its CodeSystem")
    if display is not None and display != known[code]:
        raise TerminologyError(f"{path}: {where}.display {display!r} differs from the CodeSystem's {known[code]!r}")


def install_terminology(store: Store, terminology: Terminology, base_url: str = "http://localhost/fhir") -> None:
    """PUT every CodeSystem and ConceptMap with its id in one transaction; unchanged ones write no version."""
    bundle_dict = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in terminology.resources()
        ],
    }
    for attempt in range(_INSTALL_ATTEMPTS):
        try:
            bundle.process(store, copy.deepcopy(bundle_dict), bundle.BundleOptions(base_url))
            return
        except FhirError as exc:
            if exc.status != 409 or attempt == _INSTALL_ATTEMPTS - 1:
                raise


__all__ = [
    "MEASURE_SYSTEM",
    "Measure",
    "Terminology",
    "TerminologyError",
    "install_terminology",
    "load_terminology",
]
