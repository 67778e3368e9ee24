"""FHIR R4 (4.0.1) definitions, read from the compact files ``scripts/build_fhir_definitions.py`` writes.

Everything is loaded lazily, once, and handed out as immutable objects:

* :data:`RESOURCE_TYPES` / :func:`resource_types` - the 146 concrete R4 resource type names;
* :func:`element_defs` - the JSON keys of a resource type, complex datatype or backbone element (backbone
  elements are named by their path, e.g. ``Observation.component``), choice types expanded
  (``valueQuantity``), with their FHIR type, required binding and reference target types;
* :func:`value_set_codes` - the codes of an enumerable required value set, per code system;
* :func:`search_parameters` - the search parameters of a resource type (including the ``Resource`` and
  ``DomainResource`` ones such as ``_id`` and ``_lastUpdated``), their expressions compiled to JSON key paths;
* :func:`patient_compartment` - the search parameters that put a resource into a patient's compartment.

This module must stay free of web-framework imports: the store and the CLI use it too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

DEFINITIONS_DIR = Path(__file__).with_name("r4_definitions")
ELEMENTS_FILE = DEFINITIONS_DIR / "r4_elements.json"
SEARCH_PARAMETERS_FILE = DEFINITIONS_DIR / "r4_search_parameters.json"
# TrialBridge's own search parameters (study time), in the same compiled form, plus the SearchParameter
# resources that publish them; merged after the core ones, never replacing one.
CUSTOM_SEARCH_PARAMETERS_FILE = DEFINITIONS_DIR / "trialbridge_search_parameters.json"
PATIENT_COMPARTMENT_FILE = DEFINITIONS_DIR / "r4_patient_compartment.json"


@dataclass(frozen=True, slots=True)
class ElementDef:
    """One JSON key of a type: ``Observation`` -> ``status``, ``valueQuantity``, ``component``..."""

    key: str
    fhir_type: str  # "code", "Quantity", "Reference", "Resource", or a backbone path "Observation.component"
    value_set: str | None = None  # canonical (with |version) of a required binding
    targets: tuple[str, ...] = ()  # allowed reference target types; () means any resource type

    @property
    def is_backbone(self) -> bool:
        return "." in self.fhir_type


@dataclass(frozen=True, slots=True)
class SearchPath:
    """A compiled search expression term: walk ``keys`` from the resource (through arrays implicitly).

    ``where`` filters (element, literal) apply to the element reached after ``keys[:where_at]``
    (``where_at`` None: after all keys, e.g. ``telecom`` with ``system = phone``). ``resolve_types``
    restricts a reference to these target types (``subject.where(resolve() is Patient)``). ``filters``
    are further ``(depth, where)`` pairs, for paths that filter at several steps, such as a complex
    extension's sub-extension: ``extension.where(url=A).extension.where(url=B).value``.
    """

    keys: tuple[str, ...]
    fhir_type: str
    where: tuple[tuple[str, str], ...] = ()
    resolve_types: tuple[str, ...] = ()
    where_at: int | None = None
    filters: tuple[tuple[int, tuple[tuple[str, str], ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class SearchParameter:
    code: str
    type: str  # token, string, date, number, quantity, reference, uri, composite, special
    base: str  # the resource type the expression was restricted to ("Resource" for _id, ...)
    expression: str  # the FHIRPath expression, restricted to `base`
    paths: tuple[SearchPath, ...]  # () when unsupported
    targets: tuple[str, ...]  # reference target types
    components: tuple[tuple[str, str], ...]  # composite: (component parameter code or url, relative expression)
    unsupported: str | None  # why the expression could not be compiled
    url: str = ""
    # composite: per component, its paths relative to the element a path of `paths` selects
    component_paths: tuple[tuple[SearchPath, ...], ...] = ()

    @property
    def supported(self) -> bool:
        return self.unsupported is None


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_bytes())
    return data


@cache
def _elements() -> dict[str, Any]:
    return _load(ELEMENTS_FILE)


@cache
def _search() -> dict[str, Any]:
    return _load(SEARCH_PARAMETERS_FILE)


@cache
def _compartment() -> dict[str, Any]:
    return _load(PATIENT_COMPARTMENT_FILE)


@cache
def resource_types() -> frozenset[str]:
    """The concrete FHIR R4 resource type names."""
    return frozenset(_elements()["resourceTypes"])


RESOURCE_TYPES: frozenset[str] = resource_types()


@cache
def primitive_types() -> frozenset[str]:
    return frozenset(_elements()["primitiveTypes"])


@cache
def complex_types() -> frozenset[str]:
    """Every name :func:`element_defs` knows: resources, complex datatypes and backbone elements."""
    return frozenset(_elements()["types"])


@cache
def element_defs(type_name: str) -> Mapping[str, ElementDef]:
    """JSON key -> definition for a resource type, complex datatype or backbone element path.

    Raises KeyError for an unknown (or primitive) type name.
    """
    raw: dict[str, Any] = _elements()["types"][type_name]["elements"]
    defs: dict[str, ElementDef] = {}
    for key, entry in raw.items():
        if isinstance(entry, str):
            defs[key] = ElementDef(key, entry)
        else:
            defs[key] = ElementDef(key, entry["t"], entry.get("vs"), tuple(entry.get("to", ())))
    return MappingProxyType(defs)


@cache
def choice_keys(type_name: str, name: str) -> tuple[str, ...]:
    """The concrete keys of a choice element: ("Observation", "value") -> ("valueQuantity", ...)."""
    return tuple(_elements()["types"][type_name]["choices"].get(name, ()))


@cache
def value_set_codes(canonical: str) -> Mapping[str, tuple[str, ...]] | None:
    """Code system -> codes of a required value set (canonical with or without |version).

    None when the value set is not enumerable from the packaged code systems (see
    :func:`skipped_bindings`) or is not the target of any required binding.
    """
    value_sets: dict[str, dict[str, list[str]]] = _elements()["valueSets"]
    systems = value_sets.get(canonical)
    if systems is None and "|" not in canonical:
        systems = next((v for k, v in value_sets.items() if k.split("|")[0] == canonical), None)
    if systems is None:
        return None
    return MappingProxyType({system: tuple(codes) for system, codes in systems.items()})


@cache
def skipped_bindings() -> Mapping[str, str]:
    """Required value sets that are not checked (not enumerable), with the reason."""
    skipped: dict[str, dict[str, Any]] = _elements()["skippedBindings"]
    return MappingProxyType({vs: str(info["reason"]) for vs, info in skipped.items()})


def _path(raw: dict[str, Any]) -> SearchPath:
    where = tuple((str(k), str(v)) for k, v in raw.get("where", {}).items())
    where_at = raw.get("whereAt")
    return SearchPath(
        tuple(raw["keys"]),
        raw["type"],
        where,
        tuple(raw.get("resolve", ())),
        None if where_at is None else int(where_at),
        tuple((int(f["at"]), tuple((str(k), str(v)) for k, v in f["where"].items())) for f in raw.get("filters", ())),
    )


def _parameter(base: str, raw: dict[str, Any]) -> SearchParameter:
    components = tuple(raw.get("components", ()))
    return SearchParameter(
        code=raw["code"],
        type=raw["type"],
        base=base,
        expression=raw.get("expression", ""),
        paths=tuple(_path(p) for p in raw.get("paths", ())),
        targets=tuple(raw.get("targets", ())),
        components=tuple((c["code"], c["expression"]) for c in components),
        unsupported=raw.get("unsupported"),
        url=raw.get("url", ""),
        component_paths=tuple(tuple(_path(p) for p in c.get("paths", ())) for c in components),
    )


@cache
def _parameters_by_base() -> dict[str, dict[str, SearchParameter]]:
    params: dict[str, dict[str, Any]] = _search()["parameters"]
    by_base = {base: {code: _parameter(base, raw) for code, raw in by_code.items()} for base, by_code in params.items()}
    for base, by_code in _load(CUSTOM_SEARCH_PARAMETERS_FILE)["parameters"].items():
        for code, raw in by_code.items():
            if code in by_base.get(base, {}):
                raise ValueError(f"{CUSTOM_SEARCH_PARAMETERS_FILE.name}: {base}.{code} would replace a core parameter")
            by_base.setdefault(base, {})[code] = _parameter(base, raw)
    return by_base


@cache
def custom_search_parameter_resources() -> tuple[dict[str, Any], ...]:
    """The SearchParameter resources (R4 JSON) defining TrialBridge's own parameters, to publish."""
    return tuple(_load(CUSTOM_SEARCH_PARAMETERS_FILE)["resources"])


@cache
def search_parameters(resource_type: str) -> Mapping[str, SearchParameter]:
    """Code -> search parameter for a resource type, the inherited Resource/DomainResource ones included.

    Raises KeyError for a name that is not an R4 resource type.
    """
    ancestors: dict[str, list[str]] = _search()["ancestors"]
    if resource_type not in ancestors:
        raise KeyError(resource_type)
    by_base = _parameters_by_base()
    merged: dict[str, SearchParameter] = {}
    for base in (*reversed(ancestors[resource_type]), resource_type):
        merged.update(by_base.get(base, {}))
    return MappingProxyType(merged)


@cache
def patient_compartment(resource_type: str) -> tuple[str, ...]:
    """Search parameter codes putting a resource of this type in a patient's compartment.

    ``("{def}", "link")`` for Patient (the patient itself, and patients it links to); ``()`` for types
    that are not in the compartment.
    """
    resources: dict[str, list[str]] = _compartment()["resources"]
    return tuple(resources.get(resource_type, ()))


def definitions_source() -> Mapping[str, Any]:
    """Where the generated files came from (package, version, FHIR version, corrections)."""
    return MappingProxyType(_elements()["source"])
