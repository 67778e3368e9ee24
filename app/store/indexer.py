"""Search-index extraction: one resource dict in, index rows per parameter type out.

Driven entirely by the official R4 SearchParameter definitions compiled in `app.fhir.definitions`:
each parameter is a list of JSON key paths ending in a FHIR datatype, and the datatype decides what
is indexed (a CodeableConcept gives one token row per coding, a Period one date range, ...).
This runs on the ingest hot path, so it walks plain dicts and precompiles per resource type.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cache
from typing import Any

from app.eligibility.facts import clinical_facts
from app.fhir.dates import date_range
from app.fhir.definitions import SearchParameter, SearchPath, patient_compartment, search_parameters
from app.fhir.element_memo import Remembered
from app.fhir.ucum import UCUM_SYSTEM
from app.fhir.ucum import conversion as ucum_conversion

# Served from the resource table itself, not from index rows.
RESOURCE_TABLE_PARAMS = frozenset({"_id", "_lastUpdated"})
INDEXED_TYPES = frozenset({"token", "string", "date", "number", "quantity", "reference", "uri"})

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class IndexRows:
    """Rows for each index table (keyed by parameter type) and the resource's compartment patient."""

    rows: dict[str, list[Row]]
    patient_id: str | None


@dataclass(frozen=True, slots=True)
class _Plan:
    """Per resource type: the (parameter, type, path) triples grouped by the path's first JSON key, so
    extraction visits only the elements a resource actually has."""

    by_first_key: dict[str, tuple[tuple[str, str, SearchPath], ...]]
    composites: tuple[_Composite, ...]
    codes: frozenset[str]
    compartment: frozenset[str]  # the stored parameters whose Patient references place a resource
    # Parameters whose rows would repeat other parameters' rows, and where those rows are instead.
    stored_as: dict[str, StoredAs]


@dataclass(frozen=True, slots=True)
class _Composite:
    """A two-component composite parameter: the elements it selects, and each component's type and paths."""

    code: str
    paths: tuple[SearchPath, ...]
    first: tuple[str, tuple[SearchPath, ...]]
    second: tuple[str, tuple[SearchPath, ...]]
    # JSON keys that must be present in the resource for this parameter to index anything: cheap pre-check.
    needs: frozenset[str]


COMPOSITE_FIRST = frozenset({"token", "reference"})
COMPOSITE_SECOND = frozenset({"token", "quantity", "date", "string"})


def _composite(resource_type: str, param: SearchParameter) -> _Composite | None:
    """The compiled composite, or None when it is not one this server indexes (three components, ...)."""
    if not param.paths or len(param.components) != 2 or len(param.component_paths) != 2:
        return None
    params = search_parameters(resource_type)
    kinds = [params[code].type if code in params else None for code, _ in param.components]
    if kinds[0] not in COMPOSITE_FIRST or kinds[1] not in COMPOSITE_SECOND or not all(param.component_paths):
        return None
    first, second = param.component_paths
    # An element path with no keys is the resource itself: then the second component's own key must be there.
    needs = frozenset(
        key for path in param.paths for key in ([path.keys[0]] if path.keys else [p.keys[0] for p in second if p.keys])
    )
    return _Composite(param.code, param.paths, (str(kinds[0]), first), (str(kinds[1]), second), needs)


def _shape(resource_type: str, param: SearchParameter) -> tuple[Any, ...] | None:
    """What a parameter's rows look like apart from their paths: parameters of one shape whose paths coincide
    (or add up) index the same rows. None for a parameter this server does not index."""
    if param.type == "composite":
        composite = _composite(resource_type, param)
        return None if composite is None else ("composite", composite.first, composite.second)
    if param.type in INDEXED_TYPES and param.paths and param.code not in RESOURCE_TABLE_PARAMS:
        return (param.type,)
    return None


@dataclass(frozen=True, slots=True)
class StoredAs:
    """Where a parameter's index rows are: under `params`, and (references only, when given) only the rows
    whose target is one of `target_types`."""

    params: tuple[str, ...]
    target_types: tuple[str, ...] = ()


def _aliases(resource_type: str) -> dict[str, StoredAs]:
    """Indexed parameters whose rows other parameters already hold, and where:

    - a synonym (Patient `phonetic` has the paths of `name`) is stored as the first code of its group;
    - a union (Observation `combo-code` = `code` | `component-code`) as its parts;
    - a reference restricted to target types (Observation `patient` = `subject.where(resolve() is Patient)`)
      as the unrestricted parameter's rows with those targets.

    R4 has 64 of these; at ingest they were a third of an Observation's index rows. Search reads the rows
    through `stored_as`."""
    shaped: dict[str, tuple[tuple[Any, ...], frozenset[SearchPath]]] = {}
    for p in search_parameters(resource_type).values():
        shape = _shape(resource_type, p)
        if shape is not None:
            shaped[p.code] = (shape, frozenset(p.paths))
    aliases: dict[str, StoredAs] = {}
    for code, (shape, paths) in sorted(shaped.items()):
        synonym = next((c for c, (s, ps) in sorted(shaped.items()) if s == shape and ps == paths), code)
        if synonym != code:
            aliases[code] = StoredAs((synonym,))
    kept = {code: value for code, value in shaped.items() if code not in aliases}
    unions: dict[str, tuple[str, ...]] = {}
    for code, (shape, paths) in sorted(kept.items()):
        inside = {c: ps for c, (s, ps) in kept.items() if c != code and s == shape and ps < paths}
        # the largest parts only: a part inside another would give the same rows twice
        parts = sorted(c for c, ps in inside.items() if not any(ps < other for other in inside.values()))
        if parts and frozenset().union(*(inside[c] for c in parts)) == paths:
            unions[code] = tuple(parts)

    def resolve(code: str) -> tuple[str, ...]:  # a part may itself be a union: down to parameters with rows
        leaves = {leaf for part in unions[code] for leaf in (resolve(part) if part in unions else (part,))}
        return tuple(sorted(leaves))

    aliases.update((code, StoredAs(resolve(code))) for code in unions)
    for code, (shape, paths) in sorted(kept.items()):
        targets = {path.resolve_types for path in paths}
        if code in unions or shape != ("reference",) or len(targets) != 1 or not (only := targets.pop()):
            continue
        plain = frozenset(replace(path, resolve_types=()) for path in paths)
        unrestricted = next((c for c, (s, ps) in sorted(kept.items()) if s == shape and ps == plain), None)
        if unrestricted is not None and unrestricted not in unions:
            aliases[code] = StoredAs((unrestricted,), only)
    return aliases


@cache
def _plan(resource_type: str) -> _Plan:
    grouped: dict[str, list[tuple[str, str, SearchPath]]] = {}
    codes = set()
    composites = []
    aliases = _aliases(resource_type)
    for p in search_parameters(resource_type).values():
        if _shape(resource_type, p) is None:
            continue
        codes.add(p.code)
        if p.code in aliases:
            continue  # its rows are its parts' rows
        if p.type == "composite" and (composite := _composite(resource_type, p)) is not None:
            composites.append(composite)
        else:
            for path in p.paths:
                grouped.setdefault(path.keys[0], []).append((p.code, p.type, path))
    # A compartment parameter stored as another's rows: those rows place the resource (when they are a Patient's).
    compartment = {
        code for param in patient_compartment(resource_type) for code in _stored_as_in(aliases, param).params
    }
    return _Plan(
        {k: tuple(v) for k, v in grouped.items()},
        tuple(composites),
        frozenset(codes),
        frozenset(compartment),
        aliases,
    )


def _stored_as_in(aliases: dict[str, StoredAs], code: str) -> StoredAs:
    return aliases.get(code) or StoredAs((code,))


def stored_as(resource_type: str, code: str) -> StoredAs:
    """Where the index rows of `code` are: its own, except for a synonym, a union or a target-restricted
    reference (see `_aliases`). Every query of index rows by parameter goes through this."""
    return _stored_as_in(_plan(resource_type).stored_as, code)


def indexed_parameters(resource_type: str) -> dict[str, SearchParameter]:
    """The parameters this server indexes for `resource_type` (what search and metadata may offer)."""
    codes = _plan(resource_type).codes
    return {code: p for code, p in search_parameters(resource_type).items() if code in codes}


def normalize_text(value: str) -> str:
    """Case- and accent-insensitive form used by string search: 'Émile' -> 'emile'."""
    if value.isascii():
        return value.casefold()
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _matches(node: Any, where: tuple[tuple[str, str], ...]) -> bool:
    return isinstance(node, dict) and all(node.get(k) == v for k, v in where)


def _elements(first: Any, path: SearchPath) -> list[Any]:
    """The values at `path`, given the value of its first key; arrays are walked implicitly."""
    current: list[Any] = first if isinstance(first, list) else [first]
    keys, where, where_at = path.keys, path.where, path.where_at
    for depth in range(1, len(keys)):
        if where and where_at == depth:
            current = [n for n in current if _matches(n, where)]
        for at, also in path.filters:
            if at == depth:
                current = [n for n in current if _matches(n, also)]
        following: list[Any] = []
        key = keys[depth]
        for node in current:
            if isinstance(node, dict):
                value = node.get(key)
                if isinstance(value, list):
                    following.extend(value)
                elif value is not None:
                    following.append(value)
        if not following:
            return following
        current = following
    if where and (where_at is None or where_at >= len(keys)):
        current = [n for n in current if _matches(n, where)]
    return current


# ---------------------------------------------------------------------------------------------- dates


def _date_rows(value: Any, fhir_type: str) -> Iterator[tuple[datetime | None, datetime | None]]:
    if isinstance(value, str):
        bounds = date_range(value)
        if bounds:
            yield bounds
    elif fhir_type == "Period" and isinstance(value, dict):
        start = date_range(value["start"]) if isinstance(value.get("start"), str) else None
        end = date_range(value["end"]) if isinstance(value.get("end"), str) else None
        if start or end:
            yield (start[0] if start else None), (end[1] if end else None)
    elif fhir_type == "Timing" and isinstance(value, dict):
        events = [b for e in value.get("event", []) if isinstance(e, str) and (b := date_range(e))]
        if events:
            yield min(b[0] for b in events), max(b[1] for b in events)
        bounds = (value.get("repeat") or {}).get("boundsPeriod")
        if isinstance(bounds, dict):
            yield from _date_rows(bounds, "Period")


# --------------------------------------------------------------------------------------------- tokens


def _token_rows(value: Any, fhir_type: str) -> Iterator[tuple[str | None, str | None, str | None]]:
    if isinstance(value, bool):
        yield None, "true" if value else "false", None
    elif isinstance(value, str):
        yield None, value, None
    elif not isinstance(value, dict):
        return
    elif fhir_type == "CodeableConcept":
        text = value.get("text")
        for coding in value.get("coding", ()):
            display = coding.get("display") or text
            yield coding.get("system"), coding.get("code"), normalize_text(display) if display else None
        if text and not value.get("coding"):
            yield None, None, normalize_text(text)
    elif fhir_type == "Coding":
        display = value.get("display")
        yield value.get("system"), value.get("code"), normalize_text(display) if display else None
    elif fhir_type == "Identifier":
        type_text = (value.get("type") or {}).get("text")
        yield value.get("system"), value.get("value"), normalize_text(type_text) if type_text else None
    elif fhir_type == "ContactPoint":
        yield value.get("system"), value.get("value"), None


# -------------------------------------------------------------------------------------------- strings

_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def _string_values(value: Any, fhir_type: str) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        parts = _NAME_PARTS if fhir_type == "HumanName" else _ADDRESS_PARTS if fhir_type == "Address" else ()
        for part in parts:
            item = value.get(part)
            if isinstance(item, str):
                yield item
            elif isinstance(item, list):
                yield from (i for i in item if isinstance(i, str))


# ----------------------------------------------------------------------------------------- references


def parse_reference(reference: str) -> tuple[str | None, str | None, str | None]:
    """'Patient/1/_history/2' -> ('Patient', '1', '2'); absolute URLs keep their last Type/id."""
    if reference.startswith(("#", "urn:")):
        return None, None, None
    base = reference.split("?", 1)[0]
    parts = base.rstrip("/").split("/")
    version = None
    if len(parts) >= 4 and parts[-2] == "_history":
        version = parts[-1]
        parts = parts[:-2]
    if len(parts) >= 2 and parts[-2][:1].isupper() and 0 < len(parts[-1]) <= 64 and len(parts[-2]) <= 64:
        return parts[-2], parts[-1], version
    return None, None, None


def _reference_row(value: Any) -> Row | None:
    if isinstance(value, str):  # canonical or uri typed references
        return {
            "target_type": None,
            "target_id": None,
            "target_version": None,
            "url": value,
            "identifier_system": None,
            "identifier_value": None,
        }
    if not isinstance(value, dict):
        return None
    reference = value.get("reference")
    raw_identifier = value.get("identifier")
    identifier = raw_identifier if isinstance(raw_identifier, dict) else {}
    target_type = target_id = version = url = None
    if isinstance(reference, str):
        if "://" in reference:  # another server's (writes store references to this one relative)
            url = reference
        else:
            target_type, target_id, version = parse_reference(reference)
            if target_id is None:
                url = reference
    if target_id is None and url is None and not identifier:
        return None
    return {
        "target_type": target_type,
        "target_id": target_id,
        "target_version": version,
        "url": url,
        "identifier_system": identifier.get("system"),
        "identifier_value": identifier.get("value"),
    }


# ------------------------------------------------------------------------------------------ quantities


def _quantity_rows(value: Any) -> list[Row]:
    """One row per Quantity (Age, Duration, Money, ...); with a UCUM code, also its canonical form, so that
    searches compare 3900 pg/mL with 3.7 ng/mL. After a code's first use this is a dict look-up and a product."""
    if not isinstance(value, dict):
        return []
    number = value.get("value")
    if not isinstance(number, int | float) or isinstance(number, bool):
        return []
    code = value.get("code") or value.get("currency")
    system = value.get("system")
    canonical_value = canonical_code = None
    if system == UCUM_SYSTEM and isinstance(code, str):
        conversion = ucum_conversion(code)
        if conversion is not None:
            canonical_value = number * conversion.scale + conversion.offset
            canonical_code = conversion.canonical_code
    return [
        {
            "value": float(number),
            "system": system,
            "code": code,
            "unit": value.get("unit"),
            "canonical_value": canonical_value,
            "canonical_code": canonical_code,
        }
    ]


# ---------------------------------------------------------------------------------------------- entry


def _rows_for(kind: str, value: Any, path: SearchPath) -> list[Row]:
    fhir_type = path.fhir_type
    if kind == "token":
        rows = [{"system": s, "code": c, "text": t} for s, c, t in _token_rows(value, fhir_type)]
        if fhir_type == "Identifier" and isinstance(value, dict) and value.get("value"):
            # For `identifier:of-type=typeSystem|typeCode|value`: one row per type coding, under `<param>:of-type`.
            for coding in (value.get("type") or {}).get("coding", ()):
                rows.append(
                    {
                        "system": coding.get("system"),
                        "code": f"{coding.get('code')}|{value['value']}",
                        "text": None,
                        "param_suffix": ":of-type",
                    }
                )
        return rows
    if kind == "reference":
        row = _reference_row(value)
        return [row] if row is not None and (not path.resolve_types or row["target_type"] in path.resolve_types) else []
    if kind == "string":
        return [{"value": normalize_text(s)[:2000], "exact": s[:2000]} for s in _string_values(value, fhir_type)]
    if kind == "date":
        return [{"low": lo, "high": hi} for lo, hi in _date_rows(value, fhir_type)]
    if kind == "quantity":
        return _quantity_rows(value)
    if kind == "number":
        return [{"value": float(value)}] if isinstance(value, int | float) and not isinstance(value, bool) else []
    if kind == "uri":
        return [{"value": value}] if isinstance(value, str) else []
    return []


def _select(node: Any, path: SearchPath) -> list[Any]:
    if not path.keys:
        return [node]
    first = node.get(path.keys[0]) if isinstance(node, dict) else None
    return [] if first is None else _elements(first, path)


def _component_rows(element: Any, kind: str, paths: tuple[SearchPath, ...]) -> list[Row]:
    return [row for path in paths for value in _select(element, path) for row in _rows_for(kind, value, path)]


def _composite_rows(resource: dict[str, Any], composite: _Composite) -> list[Row]:
    rows: list[Row] = []
    (first_kind, first_paths), (second_kind, second_paths) = composite.first, composite.second
    for path in composite.paths:
        for element in _select(resource, path):
            firsts = _component_rows(element, first_kind, first_paths)
            seconds = _component_rows(element, second_kind, second_paths) if firsts else []
            for one in firsts:
                head = (
                    {"c1_system": one["target_type"], "c1_code": one["target_id"]}
                    if first_kind == "reference"
                    else {"c1_system": one["system"], "c1_code": one["code"]}
                )
                for two in seconds:
                    row = {"param": composite.code, **head}
                    if second_kind == "token":
                        row.update(c2_system=two["system"], c2_code=two["code"])
                    elif second_kind == "quantity":
                        row.update(
                            c2_value=two["value"],
                            c2_system=two["system"],
                            c2_code=two["code"],
                            c2_unit=two["unit"],
                            c2_canonical_value=two.get("canonical_value"),
                            c2_canonical_code=two.get("canonical_code"),
                        )
                    elif second_kind == "date":
                        row.update(c2_low=two["low"], c2_high=two["high"])
                    else:
                        row.update(c2_text=two["value"])
                    rows.append(row)
    return rows


def _compartment_patient(row: Row, code: str, compartment: frozenset[str]) -> str | None:
    """The Patient a reference row of parameter `code` places its resource with, if any."""
    if code in compartment and row["target_type"] == "Patient":
        patient: str | None = row["target_id"]
        return patient
    return None


def extract(
    resource_type: str,
    res_id: str,
    resource: dict[str, Any],
    *,
    only: frozenset[str] | None = None,
    remembered: Mapping[str, Remembered] | None = None,
) -> IndexRows:
    """Every index row for one resource (of the parameters `only`, when given), the eligibility facts derived
    from them (under "fact"), plus the id of the patient whose compartment holds it. `remembered`: validation's
    entries for the resource's complex elements (by JSON key); an element's rows depend on it alone, so they are
    taken from its entry when it has them, and left in it when not."""
    plan = _plan(resource_type)
    rows: dict[str, list[Row]] = {}
    patient_id = res_id if resource_type == "Patient" else None
    compartment = plan.compartment
    for key, first in resource.items():
        parameters = plan.by_first_key.get(key)
        if not parameters:
            continue
        entry = None if remembered is None or only is not None else remembered.get(key)
        if entry is not None and entry.rows is not None:
            for kind, template in entry.rows:
                row = template.copy()
                rows.setdefault(kind, []).append(row)
                if patient_id is None and kind == "reference":
                    patient_id = _compartment_patient(row, row["param"], compartment)
            continue
        made: list[tuple[str, Row]] | None = None if entry is None else []
        for code, kind, path in parameters:
            if only is not None and code not in only and code not in compartment:
                continue
            for value in _elements(first, path):
                for row in _rows_for(kind, value, path):
                    row["param"] = code + row.pop("param_suffix", "")
                    rows.setdefault(kind, []).append(row)
                    if made is not None:
                        made.append((kind, row.copy()))  # before the resource's own columns are added below
                    if patient_id is None and kind == "reference":
                        patient_id = _compartment_patient(row, code, compartment)
        if entry is not None:
            entry.rows = made
    if plan.composites and only is None:
        composite_rows = [
            row
            for composite in plan.composites
            if not composite.needs.isdisjoint(resource)
            for row in _composite_rows(resource, composite)
        ]
        if composite_rows:
            rows["composite"] = composite_rows
    for table_rows in rows.values():
        for row in table_rows:
            row["res_type"] = resource_type
            row["res_id"] = res_id
            row["patient_id"] = patient_id
    facts = clinical_facts(resource_type, rows)
    if facts:
        rows["fact"] = facts
    return IndexRows(rows, patient_id)
