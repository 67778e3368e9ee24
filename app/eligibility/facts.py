"""Eligibility facts: per clinical resource and coding, everything a screening reads, in one row.

The search-index tables are entity-attribute-value tables: a screening that read them joined every
Observation, Condition and medication candidate by resource id to its status, date and value rows (hash
joins over the population, the cost that kept screenings seconds over target). The store therefore writes,
with the index rows and from them, one `clinical_fact` row per (resource, coding of its `code`) holding the
patient, the code, the status that decides whether the record counts, its date span, its value (as written
and UCUM canonical) and, for Observations, its positivity. `app.eligibility.sql` scans these rows by code and
groups them by patient: no joins.

Derived from the index rows `indexer.extract` produces (the same rows searches read), so the facts say what
those rows say; what "counts", "active" and "positive" mean is the reference evaluator's
(`app.eligibility.rules`, which both evaluators share). Pure: no database, no web framework.
"""

from __future__ import annotations

from typing import Any

from app.eligibility import rules
from app.fhir.systems import INTERPRETATION

Row = dict[str, Any]

# Per fact type: the date parameters in order of preference (the first present one gives the span) and
# whether the span takes only rows with a start (Observation, Condition) or every row (medications).
_DATES: dict[str, tuple[tuple[str, ...], bool]] = {
    "Observation": (("date",), True),
    "Condition": (("onset-date", "recorded-date"), True),
    "MedicationStatement": (("effective",), False),
    "MedicationRequest": (("validity", "authoredon"), False),
    "MedicationAdministration": (("effective-time",), False),
}
FACT_TYPES = frozenset(_DATES)
# The search parameters the facts are derived from: a backfill extracts only these.
FACT_PARAMETERS: dict[str, frozenset[str]] = {
    "Observation": frozenset(
        {"code", "status", "date", "value-quantity", "interpretation", "value-concept", "reference-high"}
    ),
    "Condition": frozenset({"code", "verification-status", "clinical-status", "onset-date", "recorded-date"}),
    "MedicationStatement": frozenset({"code", "status", "effective"}),
    "MedicationRequest": frozenset({"code", "status", "validity", "authoredon"}),
    "MedicationAdministration": frozenset({"code", "status", "effective-time"}),
}
# The value-quantity index row's columns and the fact columns holding them.
_VALUE_COLUMNS = {
    "value": "value",
    "system": "unit_system",
    "code": "unit_code",
    "canonical_value": "canonical_value",
    "canonical_code": "canonical_code",
}


def _preferred(codes: list[str], preferred: frozenset[str]) -> str | None:
    """One code standing for several codings: a preferred one when there is one, else the first."""
    return next((code for code in codes if code in preferred), codes[0] if codes else None)


def _span(resource_type: str, dates: list[Row]) -> tuple[Any, Any]:
    """(lo, hi) of the resource's date: Observation and Condition the earliest start and latest end (an
    open end: its start) of rows with a start; medications the latest start and latest end."""
    params, needs_start = _DATES[resource_type]
    for param in params:
        rows = [row for row in dates if row["param"] == param and (row["low"] is not None or not needs_start)]
        if not rows:
            continue
        if needs_start:
            return min(row["low"] for row in rows), max(row["high"] or row["low"] for row in rows)
        lows = [row["low"] for row in rows if row["low"] is not None]
        highs = [row["high"] for row in rows if row["high"] is not None]
        return (max(lows) if lows else None), (max(highs) if highs else None)
    return None, None


def _value(quantities: list[Row]) -> dict[str, Any]:
    """The value-quantity fact columns (NULLs without one); several rows: each column's maximum, as SQL's MAX."""
    rows = [row for row in quantities if row["param"] == "value-quantity"]
    found = {}
    for column, fact_column in _VALUE_COLUMNS.items():
        values = [row[column] for row in rows if row[column] is not None]
        found[fact_column] = max(values) if values else None
    return found


def _positivity(tokens: dict[str, list[Row]], quantities: list[Row], value: dict[str, Any]) -> int | None:
    """`reference.positivity` over index rows: 1 positive, 0 negative, None when it cannot be read."""
    interpretations = {
        row["code"] for row in tokens.get("interpretation", ()) if row["system"] in (None, INTERPRETATION)
    }
    if interpretations:
        if not interpretations.isdisjoint(rules.POSITIVE_INTERPRETATIONS):
            return 1
        if not interpretations.isdisjoint(rules.NEGATIVE_INTERPRETATIONS):
            return 0
    coded = {row["code"] for row in tokens.get("value-concept", ()) if row["system"] == rules.SNOMED}
    if rules.POSITIVE_VALUE in coded:
        return 1
    if rules.NEGATIVE_VALUE in coded:
        return 0
    if value["value"] is None:
        return None
    # A reference high is comparable when it is a bare number (the value's unit), has the value's system and
    # code, or converts to the same canonical unit; positive only above every comparable high.
    comparable = False
    for high in quantities:
        if high["param"] != "reference-high":
            continue
        bare = high["code"] is None and high["unit"] is None
        same_unit = value["unit_code"] is not None and (value["unit_system"], value["unit_code"]) == (
            high["system"],
            high["code"],
        )
        as_written = bare or same_unit
        if as_written:
            above = rules.compare(value["value"], ">", high["value"])
        elif value["canonical_code"] is not None and value["canonical_code"] == high["canonical_code"]:
            above = rules.compare(value["canonical_value"], ">", high["canonical_value"])
        else:
            continue
        if not above:
            return 0
        comparable = True
    return 1 if comparable else None


def clinical_facts(resource_type: str, rows: dict[str, list[Row]]) -> list[Row]:
    """The fact rows of one resource from its index rows (per index table, as `indexer.extract` gives them,
    with res_type, res_id and patient_id set): one per distinct coding of `code`; none for other types."""
    if resource_type not in FACT_TYPES:
        return []
    tokens: dict[str, list[Row]] = {}
    for row in rows.get("token", ()):
        tokens.setdefault(row["param"], []).append(row)
    coded = [row for row in tokens.get("code", ()) if row["system"] is not None or row["code"] is not None]
    if not coded:
        return []
    lo, hi = _span(resource_type, rows.get("date", []))
    common: Row = {
        "res_type": resource_type,
        "res_id": coded[0]["res_id"],
        "patient_id": coded[0]["patient_id"],
        "lo": lo,
        "hi": hi,
        "clinical_status": None,
        "positive": None,
        **dict.fromkeys(_VALUE_COLUMNS.values()),
    }

    def codes(param: str) -> list[str]:
        return [row["code"] for row in tokens.get(param, ()) if row["code"] is not None]

    if resource_type == "Condition":
        common["status"] = _preferred(codes("verification-status"), rules.VOID_VERIFICATION)
        common["clinical_status"] = _preferred(codes("clinical-status"), rules.ACTIVE_CLINICAL)
    else:
        common["status"] = next(iter(codes("status")), None)
    if resource_type == "Observation":
        quantities = rows.get("quantity", [])
        value = _value(quantities)
        common.update(value)
        common["positive"] = _positivity(tokens, quantities, value)
    if len(coded) == 1:
        return [{**common, "system": coded[0]["system"], "code": coded[0]["code"]}]
    seen: set[tuple[str | None, str | None]] = set()
    facts = []
    for row in coded:
        key = (row["system"], row["code"])
        if key not in seen:
            seen.add(key)
            facts.append({**common, "system": row["system"], "code": row["code"]})
    return facts


__all__ = ["FACT_PARAMETERS", "FACT_TYPES", "clinical_facts"]
