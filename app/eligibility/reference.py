"""The reference evaluator: one patient's FHIR R4 resources against a study's criteria, node by node, in Python.

This is the oracle the set-based SQL evaluator must agree with, so it follows mappings/README.md ("The
criteria language", "Three-valued semantics") rule by rule and prefers plain loops to cleverness. Every
node evaluates to True, False or None (unknown) with the evidence that decided it; `evaluate_patient`
turns them into criterion outcomes and a patient status. Pure: no database, no web framework.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from app.eligibility import criteria as c
from app.eligibility.dates import (
    Span,
    date_span,
    describe_window,
    minus_window,
    period_span,
    timing_span,
    whole_years,
    written_date,
)
from app.eligibility.outcome import CriterionResult, Evidence, PatientResult, outcome_of, status_of
from app.eligibility.rules import (
    ACTIVE_CLINICAL,
    ADMINISTRATION_ONGOING,
    ADMINISTRATION_STATUSES,
    HCG_CODES,
    ICD10_SYSTEMS,
    INTERPRETATION_SYSTEM,
    LOINC,
    NEGATIVE_INTERPRETATIONS,
    NEGATIVE_VALUE,
    OBSERVATION_STATUSES,
    ONGOING_PARTICIPATION,
    PARTICIPATING,
    POSITIVE_INTERPRETATIONS,
    POSITIVE_VALUE,
    PREGNANCY_SNOMED,
    REQUEST_ONGOING,
    REQUEST_STATUSES,
    SNOMED,
    STATEMENT_NOT_TAKEN,
    STATEMENT_ONGOING,
    VOID_VERIFICATION,
    compare,
)
from app.fhir.ucum import UCUM_SYSTEM, conversion

Truth = bool | None  # None: unknown

_SHORT = {url: short for short, url in c.SYSTEMS.items()}

# The elements holding a resource's date, in order of preference, and their FHIR types: what the date search
# parameters index (README, "Three-valued semantics"): Condition onset-date then recorded-date, Observation date.
CONDITION_DATE = (("onsetDateTime", "dateTime"), ("onsetPeriod", "Period"), ("recordedDate", "dateTime"))
OBSERVATION_DATE = (
    ("effectiveDateTime", "dateTime"),
    ("effectivePeriod", "Period"),
    ("effectiveTiming", "Timing"),
    ("effectiveInstant", "instant"),
)


@dataclass(frozen=True, slots=True)
class Verdict:
    truth: Truth
    evidence: tuple[Evidence, ...] = ()


# ---------------------------------------------------------------------------------------------- helpers


def short_code(system: str | None, code: str | None) -> str:
    """`loinc|6690-2` for the systems specs name by a short name, else `url|code`."""
    return f"{_SHORT.get(system or '', system)}|{code}"


def _codes_text(refs: Iterable[c.CodeRef]) -> str:
    return ", ".join(short_code(ref.system, ref.code) for ref in refs)


def matching_coding(concept: Any, refs: Iterable[c.CodeRef]) -> dict[str, Any] | None:
    """The first coding of a CodeableConcept that one of `refs` matches."""
    if not isinstance(concept, dict):
        return None
    refs = tuple(refs)
    for coding in concept.get("coding") or ():
        if isinstance(coding, dict) and any(ref.matches(coding.get("system"), coding.get("code")) for ref in refs):
            return coding
    return None


def _status_codes(concept: Any) -> frozenset[str]:
    """The codes of a status CodeableConcept (Condition.clinicalStatus / verificationStatus), any coding."""
    if not isinstance(concept, dict):
        return frozenset()
    return frozenset(
        str(coding["code"])
        for coding in concept.get("coding") or ()
        if isinstance(coding, dict) and isinstance(coding.get("code"), str)
    )


def _void(resource: dict[str, Any]) -> bool:
    """verificationStatus refuted or entered-in-error (any of its codings)."""
    return not _status_codes(resource.get("verificationStatus")).isdisjoint(VOID_VERIFICATION)


def _clinical(resource: dict[str, Any]) -> tuple[bool | None, str]:
    """Whether clinicalStatus says active/recurrence/relapse (None: no clinicalStatus), and its codes as text."""
    codes = _status_codes(resource.get("clinicalStatus"))
    if not codes:
        return None, ""
    return not codes.isdisjoint(ACTIVE_CLINICAL), "/".join(sorted(codes))


def _get(resource: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = resource
    for step in path:
        value = value.get(step) if isinstance(value, dict) else None
    return value


def _dated(resource: dict[str, Any], elements: tuple[tuple[str, str], ...]) -> tuple[str | None, Span | None]:
    """The first date element that gives days (dateTime/instant; Period with a start; Timing), as evidence
    shows it (`written_date`), and the UTC days it covers."""
    for key, fhir_type in elements:
        value = resource.get(key)
        if fhir_type == "Period":
            span = period_span(value)
            written = written_date(value.get("start")) if span is not None and isinstance(value, dict) else None
        elif fhir_type == "Timing":
            span = timing_span(value)
            written = span[0].isoformat() if span is not None else None
        else:
            span = date_span(value)
            written = written_date(value)
        if span is not None:
            return written, span
    return None, None


def _in_window(span: Span, start: date) -> Truth:
    """Whether dated data (already known to start on or before the screening date) lies in [start, D]:
    a partial date straddling `start` is only partly in it (None)."""
    if span[0] >= start:
        return True
    if span[1] < start:
        return False
    return None


def _reference(resource: dict[str, Any]) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def reference_key(reference: Any) -> str | None:
    """`Type/id` of a relative or absolute literal reference (version and base URL dropped)."""
    if not isinstance(reference, str) or reference.startswith(("urn:", "#")):
        return None
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _in_unit(value: float, code: str, unit: str) -> float | None:
    """`value` in UCUM `code` expressed in UCUM `unit`; None when the two do not convert."""
    source, target = conversion(code), conversion(unit)
    if source is None or target is None or source.canonical_code != target.canonical_code:
        return None
    return (source.apply(value) - target.offset) / target.scale


def _canonical(value: float, code: str) -> tuple[float, str] | None:
    found = conversion(code)
    return None if found is None else (found.apply(value), found.canonical_code)


def _g(value: float) -> str:
    return f"{value:g}"


# ---------------------------------------------------------------------------------------------- the patient


class PatientData:
    """One patient's resources by type, the screening date and the study being screened for."""

    def __init__(self, resources: list[dict[str, Any]], as_of: date, study_reference: str) -> None:
        self.as_of = as_of
        self.study_key = reference_key(study_reference) or study_reference
        self.by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for resource in resources:
            self.by_type[str(resource.get("resourceType"))].append(resource)
        patients = self.by_type.get("Patient") or []
        self.patient: dict[str, Any] | None = patients[0] if patients else None
        if self.patient is not None:
            self.patient_id = str(self.patient.get("id"))
        else:
            owners = {owner for owner in map(patient_of, resources) if owner is not None}
            if len(owners) != 1:
                raise ValueError(f"the resources name {len(owners)} patients, not one")
            self.patient_id = owners.pop()

    def of(self, resource_type: str) -> list[dict[str, Any]]:
        return self.by_type.get(resource_type, [])

    def window_phrase(self, window: c.Window | None) -> str:
        if window is None:
            return f"on or before {self.as_of.isoformat()}"
        return f"in the {describe_window(window)} before {self.as_of.isoformat()}"


# ---------------------------------------------------------------------------------------------- nodes


def evaluate(expression: c.Expression, patient: PatientData) -> Verdict:
    """One node, recursively: True, False or None (unknown) and its evidence."""
    kind = expression.kind  # (`expression.node` would look the kind up again)
    return _NODES[kind](getattr(expression, "not_" if kind == "not" else kind), patient)


def _age(node: c.Age, patient: PatientData) -> Verdict:
    record = patient.patient
    if record is None:
        return Verdict(None, (Evidence(note="no Patient resource"),))
    reference = _reference(record)
    birth = record.get("birthDate")
    span = date_span(birth)
    if span is None:
        return Verdict(None, (Evidence(reference=reference, note="no birthDate"),))
    youngest, oldest = whole_years(span[1], patient.as_of), whole_years(span[0], patient.as_of)
    low = node.min if node.min is not None else -math.inf
    high = min(node.max if node.max is not None else math.inf, node.below - 1 if node.below is not None else math.inf)
    if low <= youngest and oldest <= high:
        truth: Truth = True
    elif oldest < low or youngest > high or low > high:
        truth = False
    else:
        truth = None
    if youngest == oldest:
        return Verdict(truth, (Evidence(reference=reference, date=birth, value=youngest, unit="a"),))
    note = f"birthDate {birth} allows ages {youngest} to {oldest} on {patient.as_of.isoformat()}"
    return Verdict(truth, (Evidence(reference=reference, date=birth, note=note),))


def _sex(node: c.Sex, patient: PatientData) -> Verdict:
    record = patient.patient
    if record is None:
        return Verdict(None, (Evidence(note="no Patient resource"),))
    gender = record.get("gender")
    if not isinstance(gender, str):
        return Verdict(None, (Evidence(reference=_reference(record), note="no gender"),))
    return Verdict(gender in node.administrative, (Evidence(reference=_reference(record), value=gender),))


def _condition(node: c.Condition, patient: PatientData) -> Verdict:
    start = minus_window(patient.as_of, node.within) if node.within is not None else None
    qualifying: list[Evidence] = []
    unknown: list[Evidence] = []
    others: list[Evidence] = []
    for resource in patient.of("Condition"):
        coding = matching_coding(resource.get("code"), node.codes)
        if coding is None or matching_coding(resource.get("code"), node.exceptions) is not None:
            continue
        if _void(resource):
            continue
        written, span = _dated(resource, CONDITION_DATE)
        if span is not None and span[0] > patient.as_of:
            continue  # future-dated

        base = Evidence(
            reference=_reference(resource), date=written, code=short_code(coding.get("system"), coding.get("code"))
        )
        active, clinical = _clinical(resource)
        if node.active_only and active is False:
            others.append(replace(base, note=f"clinicalStatus {clinical}"))
            continue
        if start is not None:
            if span is None:
                unknown.append(replace(base, note="no onset or recorded date"))
                continue
            inside = _in_window(span, start)
            if inside is False:
                others.append(replace(base, note=f"dated before {start.isoformat()}"))
                continue
            if inside is None:
                unknown.append(replace(base, note=f"{written} is only partly after {start.isoformat()}"))
                continue
        qualifying.append(base)
    if qualifying:
        return Verdict(True, tuple(qualifying))
    if unknown:
        return Verdict(None, tuple(unknown))
    if others:
        return Verdict(False, tuple(others))
    note = f"no Condition coded {_codes_text(node.codes)}"
    if node.within is not None:
        note += f" {patient.window_phrase(node.within)}"
    return Verdict(False if node.missing == "absent" else None, (Evidence(note=note),))


@dataclass(frozen=True, slots=True)
class _Reading:
    """A usable observation: the day it counts for, whether it meets the node, its rank among same-day ones."""

    day: date
    meets: bool
    rank: float
    evidence: Evidence


def _threshold_reading(node: c.Observation, resource: dict[str, Any]) -> tuple[bool, float, Any, str, str | None] | str:
    """(meets, rank, value and unit as written, conversion note) for a usable value, else why it is not usable."""
    assert node.comparator is not None and node.value is not None and node.unit is not None
    quantity = _dict(resource.get("valueQuantity"))
    value = _number(quantity.get("value"))
    if value is None:
        return "no valueQuantity value"
    code = quantity.get("code")
    if quantity.get("system") != UCUM_SYSTEM or not isinstance(code, str):
        return f"unit {quantity.get('unit') or code!r} is not a UCUM code"
    targets = [(node.value, node.unit, 1.0)] + [
        (alternative.value, alternative.unit, node.value / alternative.value if alternative.value else 1.0)
        for alternative in node.alternatives
    ]
    for threshold, unit, rank_scale in targets:
        here = _canonical(value, code)
        there = _canonical(threshold, unit)
        if here is None or there is None or here[1] != there[1]:
            continue
        meets = compare(here[0], node.comparator, there[0])
        in_unit = _in_unit(value, code, unit)
        assert in_unit is not None
        note = None if code == unit else f"{_g(value)} {code} = {_g(in_unit)} {unit}"
        return meets, in_unit * rank_scale, quantity["value"], code, note
    units = " or ".join([node.unit] + [alternative.unit for alternative in node.alternatives])
    return f"unit {code!r} cannot be converted to {units}"


def positivity(resource: dict[str, Any]) -> tuple[bool, str] | str:
    """(positive?, how it was read) from interpretation, coded value or reference high; else why it cannot be read."""
    interpretations = [
        coding.get("code")
        for concept in resource.get("interpretation") or ()
        if isinstance(concept, dict)
        for coding in concept.get("coding") or ()
        if isinstance(coding, dict) and coding.get("system") in (None, INTERPRETATION_SYSTEM)
    ]
    for code in interpretations:
        if code in POSITIVE_INTERPRETATIONS:
            return True, f"interpretation {code}"
    for code in interpretations:
        if code in NEGATIVE_INTERPRETATIONS:
            return False, f"interpretation {code}"
    coded = {
        coding.get("code")
        for coding in _dict(resource.get("valueCodeableConcept")).get("coding") or ()
        if isinstance(coding, dict) and coding.get("system") == SNOMED
    }
    if POSITIVE_VALUE in coded:
        return True, f"value snomed|{POSITIVE_VALUE}"
    if NEGATIVE_VALUE in coded:
        return False, f"value snomed|{NEGATIVE_VALUE}"
    quantity = _dict(resource.get("valueQuantity"))
    value = _number(quantity.get("value"))
    highs = [
        ref["high"]
        for ref in resource.get("referenceRange") or ()
        if isinstance(ref, dict) and isinstance(ref.get("high"), dict) and _number(ref["high"].get("value")) is not None
    ]
    if value is None or not highs:
        return "no interpretation, coded result, or value with a reference high"
    unit_text = quantity.get("code") or quantity.get("unit") or ""
    # Every reference high comparable with the value: positive only above all of them.
    compared = [(pair, high) for high in highs if (pair := _against_high(quantity, value, high)) is not None]
    if not compared:
        units = ", ".join(repr(high.get("code") or high.get("unit")) for high in highs)
        return f"reference high in {units}, the value in {unit_text!r}"
    below = next(((pair, high) for pair, high in compared if not compare(pair[0], ">", pair[1])), None)
    positive = below is None
    pair, high = below if below is not None else max(compared, key=lambda item: item[0][1])
    sign = ">" if positive else "<="
    return positive, " ".join(filter(None, (_g(value), unit_text, sign, "reference high", _g(high["value"]))))


def _against_high(quantity: dict[str, Any], value: float, high: dict[str, Any]) -> tuple[float, float] | None:
    """The value and a reference high as two comparable numbers, or None when their units differ: a bare
    high (no unit, no code) is in the value's unit; the same system and code compare as written; else both
    are UCUM and convert to the same canonical unit."""
    high_value = float(high["value"])
    code, high_code = quantity.get("code"), high.get("code")
    if high_code is None and high.get("unit") is None:
        return value, high_value
    if quantity.get("system") == high.get("system") and code == high_code and code is not None:
        return value, high_value
    here = _canonical(value, code) if quantity.get("system") == UCUM_SYSTEM and isinstance(code, str) else None
    there = (
        _canonical(high_value, high_code) if high.get("system") == UCUM_SYSTEM and isinstance(high_code, str) else None
    )
    return (here[0], there[0]) if here and there and here[1] == there[1] else None


def _observation(node: c.Observation, patient: PatientData) -> Verdict:
    start = minus_window(patient.as_of, node.lookback) if node.lookback is not None else None
    readings: list[_Reading] = []
    unusable: list[Evidence] = []
    for resource in patient.of("Observation"):
        coding = matching_coding(resource.get("code"), node.codes)
        if coding is None or resource.get("status") not in OBSERVATION_STATUSES:
            continue
        written, span = _dated(resource, OBSERVATION_DATE)
        if span is not None and span[0] > patient.as_of:
            continue  # future-dated
        code_text = short_code(coding.get("system"), coding.get("code"))
        reference = _reference(resource)
        if span is None:
            unusable.append(Evidence(reference=reference, code=code_text, note="no effective date"))
            continue
        if start is not None:
            inside = _in_window(span, start)
            if inside is False:
                continue
            if inside is None:
                partly = f"{written} is only partly after {start.isoformat()}"
                unusable.append(Evidence(reference=reference, date=written, code=code_text, note=partly))
                continue
        if node.positive is None:
            found = _threshold_reading(node, resource)
            if isinstance(found, str):
                unusable.append(Evidence(reference=reference, date=written, code=code_text, note=found))
                continue
            meets, rank, value, unit, note = found
            evidence = Evidence(reference=reference, date=written, value=value, unit=unit, code=code_text, note=note)
        else:
            read = positivity(resource)
            if isinstance(read, str):
                unusable.append(Evidence(reference=reference, date=written, code=code_text, note=read))
                continue
            positive, how = read
            meets, rank = positive == node.positive, float(positive)
            evidence = Evidence(reference=reference, date=written, value=positive, code=code_text, note=how)
        readings.append(_Reading(span[0], meets, rank, evidence))
    if readings:
        if node.which == "latest":
            chosen = max(readings, key=lambda reading: (reading.day, reading.rank))
            return Verdict(chosen.meets, (chosen.evidence,))
        meeting = [reading.evidence for reading in readings if reading.meets]
        failing = [reading.evidence for reading in readings if not reading.meets]
        every = tuple(reading.evidence for reading in readings)
        if node.which == "any":
            return Verdict(True, tuple(meeting)) if meeting else Verdict(False, every)
        return Verdict(True, every) if not failing else Verdict(False, tuple(failing))
    if unusable:
        return Verdict(None, tuple(unusable))
    note = f"no Observation coded {_codes_text(node.codes)} {patient.window_phrase(node.lookback)}"
    return Verdict(False if node.missing == "absent" else None, (Evidence(note=note),))


@dataclass(frozen=True, slots=True)
class _Use:
    resource: dict[str, Any]
    coding: dict[str, Any]
    written: str | None  # the start as written
    start: date | None
    end: date  # date.max: ongoing


def _medication_uses(patient: PatientData, codes: list[c.CodeRef]) -> list[_Use]:
    uses = []
    kinds: tuple[tuple[str, Callable[[str | None], bool], frozenset[str], tuple[str, ...], str], ...] = (
        (
            "MedicationStatement",
            lambda status: status not in STATEMENT_NOT_TAKEN,
            STATEMENT_ONGOING,
            ("effectivePeriod",),
            "effectiveDateTime",
        ),
        (
            "MedicationRequest",
            lambda status: status in REQUEST_STATUSES,
            REQUEST_ONGOING,
            ("dispenseRequest", "validityPeriod"),
            "authoredOn",
        ),
        (
            "MedicationAdministration",
            lambda status: status in ADMINISTRATION_STATUSES,
            ADMINISTRATION_ONGOING,
            ("effectivePeriod",),
            "effectiveDateTime",
        ),
    )
    for resource_type, counts, active_statuses, period_path, moment in kinds:
        for resource in patient.of(resource_type):
            status = resource.get("status")
            coding = matching_coding(resource.get("medicationCodeableConcept"), codes)
            if coding is None or not counts(status):
                continue
            period = _dict(_get(resource, period_path))
            first, last = date_span(period.get("start")), date_span(period.get("end"))
            if first is not None or last is not None:  # a Period counts when it has a start or an end
                written = written_date(period.get("start"))
            else:
                first = last = date_span(resource.get(moment))
                written = written_date(resource.get(moment))
            if last is not None:
                end = last[1]
            elif status in active_statuses:
                end = date.max  # an open end on an active use: ongoing
            else:
                end = first[0] if first is not None else date.max  # ended, when unknown: its start's first day
            uses.append(_Use(resource, coding, written, first[0] if first is not None else None, end))
    return uses


def _medication(node: c.Medication, patient: PatientData) -> Verdict:
    as_of = patient.as_of
    start = minus_window(as_of, node.within) if node.within is not None else None
    qualifying: list[Evidence] = []
    undated: list[Evidence] = []
    others: list[Evidence] = []
    for use in _medication_uses(patient, node.codes):
        reference = _reference(use.resource)
        code_text = short_code(use.coding.get("system"), use.coding.get("code"))
        if use.start is None:
            undated.append(Evidence(reference=reference, code=code_text, note="no start date"))
            continue
        if use.start > as_of:
            continue  # future-dated
        end_text = "ongoing" if use.end == date.max else use.end.isoformat()
        lasted = (min(use.end, as_of) - use.start).days
        note = f"{use.start.isoformat()} to {end_text} ({lasted} days up to {as_of.isoformat()})"
        if node.ever:
            in_time = True
        elif start is not None:
            in_time = use.end >= start
        else:
            in_time = use.end >= as_of
        long_enough = node.min_duration is None or use.start <= minus_window(min(use.end, as_of), node.min_duration)
        evidence = Evidence(reference=reference, date=use.written, code=code_text, note=note)
        if in_time and long_enough:
            qualifying.append(evidence)
        else:
            why = "not current" if start is None else f"ended before {start.isoformat()}"
            if in_time:
                assert node.min_duration is not None
                why = f"shorter than {describe_window(node.min_duration)}"
            others.append(Evidence(reference=reference, date=use.written, code=code_text, note=f"{note}: {why}"))
    if qualifying:
        return Verdict(True, tuple(qualifying))
    if undated:
        return Verdict(None, tuple(undated))
    when = "ever" if node.ever else patient.window_phrase(node.within) if node.within else f"on {as_of.isoformat()}"
    if node.min_duration is not None:
        when += f" for {describe_window(node.min_duration)} or more"
    summary = Evidence(note=f"no use of {_codes_text(node.codes)} {when}")
    return Verdict(False if node.missing == "absent" else None, (*others, summary))


def is_pregnancy_code(system: Any, code: Any, lactation: bool) -> bool:
    """SNOMED 77386006, ICD-10 O00-O9A / Z33 / Z34; lactation (when counted): ICD-10 Z39.1, O92."""
    if not isinstance(code, str):
        return False
    if system == SNOMED:
        return code == PREGNANCY_SNOMED
    if system not in ICD10_SYSTEMS:
        return False
    if code.startswith(("O92", "Z39.1")):
        return lactation
    return code.startswith(("O", "Z33", "Z34"))


def _pregnancy(node: c.Pregnancy, patient: PatientData) -> Verdict:
    start = minus_window(patient.as_of, node.within)
    found: list[Evidence] = []
    negatives: list[Evidence] = []
    for resource in patient.of("Condition"):
        codings = (resource.get("code") or {}).get("coding") or ()
        coding = next(
            (
                coding
                for coding in codings
                if isinstance(coding, dict)
                and is_pregnancy_code(coding.get("system"), coding.get("code"), node.include_lactation)
            ),
            None,
        )
        if coding is None or _void(resource):
            continue
        written, span = _dated(resource, CONDITION_DATE)
        if span is not None and span[0] > patient.as_of:
            continue
        active, clinical = _clinical(resource)
        if active or (span is not None and _in_window(span, start) is True):
            note = f"clinicalStatus {clinical}" if active else None
            code_text = short_code(coding.get("system"), coding.get("code"))
            found.append(Evidence(reference=_reference(resource), date=written, code=code_text, note=note))
    for resource in patient.of("Observation"):
        coding = next(
            (
                coding
                for coding in (resource.get("code") or {}).get("coding") or ()
                if isinstance(coding, dict) and coding.get("system") == LOINC and coding.get("code") in HCG_CODES
            ),
            None,
        )
        if coding is None or resource.get("status") not in OBSERVATION_STATUSES:
            continue
        written, span = _dated(resource, OBSERVATION_DATE)
        if span is None or span[0] > patient.as_of or _in_window(span, start) is not True:
            continue
        read = positivity(resource)
        if isinstance(read, str):
            continue
        evidence = Evidence(
            reference=_reference(resource),
            date=written,
            value=read[0],
            code=short_code(LOINC, coding["code"]),
            note=read[1],
        )
        (found if read[0] else negatives).append(evidence)
    if found:
        return Verdict(True, tuple(found))
    what = "pregnancy or lactation" if node.include_lactation else "pregnancy"
    summary = Evidence(note=f"no {what} Condition nor positive hCG {patient.window_phrase(node.within)}")
    return Verdict(False if node.missing == "absent" else None, (*negatives, summary))


def _other_study(node: c.OtherStudy, patient: PatientData) -> Verdict:
    start = minus_window(patient.as_of, node.within)
    found: list[Evidence] = []
    unknown: list[Evidence] = []
    for resource in patient.of("ResearchSubject"):
        written_study = _get(resource, ("study", "reference"))
        # Another server's study (an absolute URL: references to this server are stored relative) is another
        # study whatever its id, as the store indexes it (a URL, no local target).
        study = None if isinstance(written_study, str) and "://" in written_study else reference_key(written_study)
        status = resource.get("status")
        if study == patient.study_key or status not in PARTICIPATING:
            continue
        period = _dict(resource.get("period"))
        first, last = date_span(period.get("start")), date_span(period.get("end"))
        if first is not None and first[0] > patient.as_of:
            continue  # future-dated
        written = written_date(period.get("start")) if first is not None else None
        end_text = last[1].isoformat() if last is not None else "no end"
        evidence = Evidence(
            reference=_reference(resource),
            date=written,
            value=status,
            code=study if study is not None else (written_study if isinstance(written_study, str) else None),
            note=f"{written or 'no start'} to {end_text}",
        )
        if last is not None:
            overlaps: Truth = last[1] >= start
        elif status in ONGOING_PARTICIPATION:
            overlaps = True  # no end: ongoing
        else:  # off-study, end not recorded: it ended at some point after its start
            overlaps = True if first is not None and first[0] >= start else None
        if overlaps:
            found.append(evidence)
        elif overlaps is None:
            unknown.append(evidence)
    if found:
        return Verdict(True, tuple(found))
    if unknown:
        return Verdict(None, tuple(unknown))
    note = f"no participation in another study {patient.window_phrase(node.within)}"
    return Verdict(False if node.missing == "absent" else None, (Evidence(note=note),))


def _unique(evidence: Iterable[Evidence]) -> tuple[Evidence, ...]:
    return tuple(dict.fromkeys(evidence))


def _all_of(children: list[c.Expression], patient: PatientData) -> Verdict:
    verdicts = [evaluate(child, patient) for child in children]
    truths = [verdict.truth for verdict in verdicts]
    if False in truths:
        return Verdict(False, _unique(e for v in verdicts if v.truth is False for e in v.evidence))
    if None in truths:
        return Verdict(None, _unique(e for v in verdicts if v.truth is None for e in v.evidence))
    return Verdict(True, _unique(e for v in verdicts for e in v.evidence))


def _any_of(children: list[c.Expression], patient: PatientData) -> Verdict:
    verdicts = [evaluate(child, patient) for child in children]
    truths = [verdict.truth for verdict in verdicts]
    if True in truths:
        return Verdict(True, _unique(e for v in verdicts if v.truth is True for e in v.evidence))
    if None in truths:
        return Verdict(None, _unique(e for v in verdicts if v.truth is None for e in v.evidence))
    return Verdict(False, _unique(e for v in verdicts for e in v.evidence))


def _not(child: c.Expression, patient: PatientData) -> Verdict:
    verdict = evaluate(child, patient)
    return Verdict(None if verdict.truth is None else not verdict.truth, verdict.evidence)


def _at_least(node: c.AtLeast, patient: PatientData) -> Verdict:
    verdicts = [evaluate(child, patient) for child in node.of]
    true = sum(verdict.truth is True for verdict in verdicts)
    unknown = sum(verdict.truth is None for verdict in verdicts)
    if true >= node.n:
        return Verdict(True, _unique(e for v in verdicts if v.truth is True for e in v.evidence))
    if true + unknown < node.n:
        return Verdict(False, _unique(e for v in verdicts for e in v.evidence))
    return Verdict(None, _unique(e for v in verdicts if v.truth is not False for e in v.evidence))


_NODES: dict[str, Callable[[Any, PatientData], Verdict]] = {
    "age": _age,
    "sex": _sex,
    "condition": _condition,
    "observation": _observation,
    "medication": _medication,
    "pregnancy": _pregnancy,
    "other_study": _other_study,
    "all_of": _all_of,
    "any_of": _any_of,
    "not": _not,
    "at_least": _at_least,
}


# ---------------------------------------------------------------------------------------------- entry points


def evaluate_criterion(criterion: c.Criterion, patient: PatientData) -> CriterionResult:
    if criterion.expression is None:
        return CriterionResult(
            criterion.id,
            criterion.type,
            criterion.text,
            "manual",
            (Evidence(note=criterion.reason),),
            criterion.reason,
        )
    verdict = evaluate(criterion.expression, patient)
    outcome = outcome_of(criterion.type, verdict.truth)
    return CriterionResult(criterion.id, criterion.type, criterion.text, outcome, verdict.evidence)


def evaluate_patient(
    criteria: c.Eligibility | list[c.Criterion],
    resources: list[dict[str, Any]],
    as_of: date,
    study_reference: str,
) -> PatientResult:
    """One patient's resources (Patient, Condition, Observation, Medication*, ResearchSubject) against
    the criteria on screening date `as_of`, for the study `study_reference` (`ResearchStudy/depil-2`:
    participation in it is not 'another study')."""
    patient = PatientData(resources, as_of, study_reference)
    listed = criteria.criteria if isinstance(criteria, c.Eligibility) else criteria
    results = tuple(evaluate_criterion(criterion, patient) for criterion in listed)
    status = status_of([result.outcome for result in results])
    return PatientResult(f"Patient/{patient.patient_id}", status, results)


_PATIENT_ELEMENTS = ("subject", "patient", "individual")


def patient_of(resource: dict[str, Any]) -> str | None:
    """The id of the Patient a resource belongs to: its own id for a Patient, else the Patient its
    subject / patient / individual reference names; None for anything else."""
    if resource.get("resourceType") == "Patient":
        return str(resource["id"]) if resource.get("id") is not None else None
    for element in _PATIENT_ELEMENTS:
        key = reference_key(_get(resource, (element, "reference")))
        if key is not None and key.startswith("Patient/"):
            return key.removeprefix("Patient/")
    return None


def group_by_patient(resources: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each patient's resources, by patient id, in input order; resources of no patient are left out."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        owner = patient_of(resource)
        if owner is not None:
            groups.setdefault(owner, []).append(resource)
    return groups


__all__ = [
    "PatientData",
    "Verdict",
    "compare",
    "evaluate",
    "evaluate_criterion",
    "evaluate_patient",
    "group_by_patient",
    "is_pregnancy_code",
    "matching_coding",
    "patient_of",
    "positivity",
    "reference_key",
    "short_code",
]
