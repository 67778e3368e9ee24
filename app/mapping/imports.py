"""CSV imports: a source file and its spec (mappings/sources) to one FHIR transaction, all or nothing.

The mapping is a pure function (`map_csv`): CSV bytes + spec + the study specs + a `Lookup` (which subjects
are enrolled, their Patient ids, arms and first doses, and, for dosing files, their resources whose study
time may change) -> the transaction's entries (PUT with deterministic ids) plus row issues. `run_import`
runs it against a Store: one transaction, so a file imports completely or not at all.

Row issues name the line (the header is line 1), the column and the value, in ``issue.expression`` as
``line[7].value`` (``line[7]`` for the whole row, ``line[1].<column>`` for the header), with a sentence a
person can act on in ``diagnostics``. One bad row rejects the file with one OperationOutcome listing every
bad row. Re-importing a file writes the same ids with the same content, so nothing changes.

Per resource kind there is one small ``to_fhir_<thing>()`` builder; code tables live in the specs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from app.fhir import bundle, ucum
from app.fhir.dates import date_range
from app.fhir.errors import FhirError, Issue
from app.fhir.systems import LOCAL_LAB
from app.fhir.validation import validation_issues
from app.fhir.validator_pool import INLINE, ValidatorPool
from app.mapping import study_time
from app.mapping.sources import Column, Scale, SourceRegistry, SourceSpec, load_sources
from app.mapping.study_spec import StudyRegistry, StudySpec
from app.mapping.transforms import TRANSFORMS, Grade, LabResult, LabTest, TransformError, parse_number
from app.store.repository import Store, StoredResource
from app.store.search import parse_search

log = logging.getLogger("trialbridge.imports")

MAX_REPORTED_ISSUES = 100
UCUM = ucum.UCUM_SYSTEM
SID = "https://trialbridge.dev/fhir/sid"
EXTENSION = "https://trialbridge.dev/fhir/StructureDefinition"
REPORTED_QUANTITY_URL = f"{EXTENSION}/reported-quantity"
RANDOMISATION_DATE_URL = f"{EXTENSION}/randomisation-date"
STRATUM_URL = f"{EXTENSION}/stratum"
END_REASON_URL = f"{EXTENSION}/end-reason"
# HL7 Adverse Event Clinical Research R4 Backport IG (STU1, 1.0.1): its extensions carry what R4 AdverseEvent lacks.
AE_GRADE_URL = "http://hl7.org/fhir/uv/ae-research-backport-ig/StructureDefinition/ae-grade"
AE_RESOLVE_DATE_URL = "http://hl7.org/fhir/uv/ae-research-backport-ig/StructureDefinition/resolve-date"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
DATA_ABSENT_REASON = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
_SUBJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATETIME = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})T([0-9]{2}:[0-9]{2})(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})?"
)
_INTEGER = re.compile(r"[+-]?[0-9]{1,12}")
_YEARS = (1800, 2200)  # dates outside are typing mistakes, not trial data


# ------------------------------------------------------------------------------------------------ issues


@dataclass(frozen=True, slots=True)
class RowIssue:
    """A problem of the file, a row or a cell; `line` counts the header as line 1."""

    line: int | None
    column: str | None
    reason: str
    code: str = "value"
    severity: str = "error"
    also: tuple[str, ...] = ()  # further columns the issue concerns (reported as more expressions)

    def to_issue(self) -> Issue:
        if self.line is None:
            return Issue(self.code, self.reason, (), self.severity)
        columns = [c for c in (self.column, *self.also) if c]
        where = f"Line {self.line}" + (" (header)" if self.line == 1 else "")
        if columns:
            where += f", column{'s' if len(columns) > 1 else ''} {', '.join(columns)}"
            expressions = tuple(f"line[{self.line}].{c}" for c in columns)
        else:
            expressions = (f"line[{self.line}]",)
        return Issue(self.code, f"{where}: {self.reason}", expressions, self.severity)


def _reject(issues: list[RowIssue]) -> FhirError:
    shown = [i.to_issue() for i in issues[:MAX_REPORTED_ISSUES]]
    if len(issues) > MAX_REPORTED_ISSUES:
        more = len(issues) - MAX_REPORTED_ISSUES
        shown.append(Issue("too-costly", f"{more} more problem(s) not listed: fix these and import again."))
    return FhirError(422, shown)


# ------------------------------------------------------------------------------------------- reading CSV


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    cells: dict[str, str | None]  # stripped; None for an empty cell


def read_csv(data: bytes, columns: dict[str, Column]) -> tuple[list[Row], list[RowIssue]]:
    """The data rows of a UTF-8 CSV file (a BOM is accepted) whose header names exactly `columns`.

    Rows with the wrong number of fields are issues, and the other rows are still read (every bad row is
    reported at once); a file that cannot be read at all, or a bad header, gives issues and no rows.
    """
    if not data.strip():
        return [], [RowIssue(None, None, "The file is empty: send a header row and at least one data row.", "required")]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        position = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        reason = (
            f"the file is not UTF-8 (byte 0x{data[exc.start]:02X}, byte {position} of the line). "
            "Save it as UTF-8 ('CSV UTF-8' in Excel) and send it again."
        )
        return [], [RowIssue(line, None, reason, "structure")]
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        return [], [RowIssue(line, None, "the file contains a NUL character: it is not a text CSV file.", "structure")]
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[tuple[int, list[str]]] = []
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            return [], [RowIssue(start, None, f"this is not valid CSV ({exc}); check the quotes.", "structure")]
        records.append((start, record))
    if not records or not any(cell.strip() for cell in records[0][1]):
        return [], [RowIssue(1, None, "the first line must be the header (the column names).", "structure")]
    header = [name.strip() for name in records[0][1]]
    issues = _check_header(header, columns)
    if issues:
        return [], issues
    rows: list[Row] = []
    for line, record in records[1:]:
        if not any(cell.strip() for cell in record):
            continue  # a blank line
        if len(record) != len(header):
            issues.append(
                RowIssue(
                    line,
                    None,
                    f"the row has {len(record)} fields but the header has {len(header)}; check the commas and quotes.",
                    "structure",
                )
            )
            continue
        rows.append(Row(line, {name: (cell.strip() or None) for name, cell in zip(header, record, strict=True)}))
    if not rows and not issues:
        issues.append(RowIssue(None, None, "The file has a header but no data rows: nothing to import.", "required"))
    return rows, issues


def _check_header(header: list[str], columns: dict[str, Column]) -> list[RowIssue]:
    if len(header) == 1:
        for delimiter, name in ((";", "semicolons"), ("\t", "tabs")):
            if delimiter in header[0]:
                return [
                    RowIssue(
                        1,
                        None,
                        f"the columns are separated by {name}; this import reads comma-separated files "
                        "(in Excel: save as 'CSV UTF-8 (comma delimited)').",
                        "structure",
                    )
                ]
    issues = []
    seen: set[str] = set()
    expected = ", ".join(columns)
    for name in header:
        if name in seen:
            issues.append(RowIssue(1, name, "this column appears twice.", "structure"))
        elif name not in columns:
            shown = name if name else "(empty name)"
            issues.append(RowIssue(1, shown, f"unknown column {shown!r}; the columns are: {expected}.", "structure"))
        seen.add(name)
    for name in columns:
        if name not in seen:
            issues.append(RowIssue(1, name, f"missing column {name!r}; the columns are: {expected}.", "required"))
    return issues


# --------------------------------------------------------------------------------------- typing the cells


@dataclass
class Record:
    """A row with typed and transformed values, its study and the key that identifies it."""

    line: int
    study: StudySpec
    values: dict[str, Any]
    key: tuple[str, ...]
    cells: dict[str, str | None]  # as written (stripped)


def type_rows(rows: list[Row], spec: SourceSpec, studies: StudyRegistry) -> tuple[list[Record], list[RowIssue]]:
    """Check and type every cell (types, ranges, codes against the study spec), then apply the transforms."""
    columns = spec.all_columns()
    records: list[Record] = []
    issues: list[RowIssue] = []
    seen: dict[tuple[str, ...], int] = {}
    study_columns = [n for n, c in columns.items() if c.type == "study"]
    for row in rows:
        row_issues: list[RowIssue] = []
        values: dict[str, Any] = {}
        study: StudySpec | None = None
        for name in study_columns:
            study = _study(row, name, studies, row_issues)
        for name, column in columns.items():
            if column.type == "study":
                values[name] = study.id if study else None
                continue
            raw = row.cells.get(name)
            if raw is None:
                if column.required:
                    row_issues.append(RowIssue(row.line, name, "empty, but this column is required.", "required"))
                values[name] = None
                continue
            try:
                values[name] = _typed(raw, column, study, spec)
            except TransformError as exc:
                row_issues.append(RowIssue(row.line, name, str(exc), exc.code))
        if study is not None and not row_issues:
            _transform(row, spec, values, row_issues)
        if row_issues or study is None:
            issues.extend(row_issues)
            continue
        key = tuple(study.id if columns[k].type == "study" else (row.cells.get(k) or "") for k in spec.key)
        if key in seen:
            issues.append(
                RowIssue(
                    row.line,
                    spec.key[-1],
                    f"this row repeats line {seen[key]} (same {', '.join(spec.key)}); keep one of them.",
                    "duplicate",
                    also=tuple(spec.key[:-1]),
                )
            )
            continue
        seen[key] = row.line
        records.append(Record(row.line, study, values, key, row.cells))
    return records, issues


def _study(row: Row, name: str, studies: StudyRegistry, issues: list[RowIssue]) -> StudySpec | None:
    raw = row.cells.get(name)
    if raw is None:
        issues.append(RowIssue(row.line, name, "empty, but this column is required.", "required"))
        return None
    found = studies.find(raw)
    if found is None:
        known = ", ".join(f"{s.id} ({s.identifiers.nct})" for s in studies)
        issues.append(RowIssue(row.line, name, f"unknown study {raw!r}; known studies: {known}.", "not-found"))
    return found


def _typed(raw: str, column: Column, study: StudySpec | None, spec: SourceSpec) -> Any:
    """The cell as a Python value; TransformError (with the reason) when it is not what the column takes."""
    kind = column.type
    if kind == "string":
        if column.pattern and not re.fullmatch(column.pattern, raw):
            raise TransformError(f"{raw!r} does not have the expected form ({column.description}).")
        return raw
    if kind == "subject":
        if not _SUBJECT.fullmatch(raw):
            raise TransformError(f"{raw!r} is not a subject number (letters, digits, '.', '_' or '-', up to 64).")
        return raw
    if kind == "integer":
        if not _INTEGER.fullmatch(raw):
            raise TransformError(f"{raw!r} is not a whole number.")
        return _in_range(int(raw), raw, column)
    if kind == "decimal":
        return _in_range(parse_number(raw), raw, column)
    if kind == "date":
        return _date(raw)
    if kind == "datetime":
        return _datetime(raw)
    if kind == "code":
        allowed = column.values if column.values is not None else _table_keys(column, spec)
        if allowed is not None and raw not in allowed:
            raise TransformError(f"{raw!r} is not one of {', '.join(allowed)}.", "code-invalid")
        return raw
    if kind == "ucum":
        if not ucum.is_valid(raw):
            raise TransformError(f"{raw!r} is not a UCUM unit (e.g. mg, mL, 10*6.[iU], 10*6/kg).", "code-invalid")
        return raw
    if study is None:  # visit, arm, intervention, strata: checked against the row's study
        return raw
    if kind == "visit":
        known = study_time.visit_names(study)
        if raw not in known:
            raise TransformError(f"{raw!r} is not a visit of {study.acronym} ({', '.join(known)}).", "code-invalid")
        return raw
    if kind == "arm":
        arms = [a.id for a in study.arms]
        if raw not in arms:
            raise TransformError(f"{raw!r} is not an arm of {study.acronym} ({', '.join(arms)}).", "code-invalid")
        return raw
    if kind == "intervention":
        ids = [i.id for i in study.interventions]
        if raw not in ids:
            raise TransformError(
                f"{raw!r} is not an intervention of {study.acronym} ({', '.join(ids)}).", "code-invalid"
            )
        return raw
    return _strata(raw, study)


def _table_keys(column: Column, spec: SourceSpec) -> list[str] | None:
    if column.table is None:
        return None
    return [str(k) for k in spec.table(column.table)]


def _in_range(value: int | float, raw: str, column: Column) -> int | float:
    number = Decimal(raw.strip())
    if column.min is not None and number < column.min:
        raise TransformError(f"{raw} is below the minimum {column.min}.")
    if column.max is not None and number > column.max:
        raise TransformError(f"{raw} is above the maximum {column.max}.")
    return value


def _date(raw: str) -> str:
    if not _DATE.fullmatch(raw):
        raise TransformError(f"{raw!r} is not a date like 2021-03-04 (YYYY-MM-DD).")
    try:
        value = date.fromisoformat(raw)
    except ValueError:
        raise TransformError(f"{raw!r} is not a date of the calendar.") from None
    if not _YEARS[0] <= value.year <= _YEARS[1]:
        raise TransformError(f"{raw!r}: the year is out of range ({_YEARS[0]}-{_YEARS[1]}).")
    return raw


def _datetime(raw: str) -> str:
    """A FHIR dateTime: a date, or a date-time with its time zone (seconds added when absent)."""
    if _DATE.fullmatch(raw):
        return _date(raw)
    match = _DATETIME.fullmatch(raw)
    if not match:
        raise TransformError(f"{raw!r} is not a date (2021-03-04) or a date-time (2021-03-04T09:30:00+01:00).")
    day, hours, seconds, _, zone = match.groups()
    if zone is None:
        raise TransformError(f"{raw!r} has a time but no time zone; add it (2021-03-04T09:30:00+01:00 or ...Z).")
    value = f"{day}T{hours}{seconds or ':00'}{zone}"
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise TransformError(f"{raw!r} is not a date-time of the calendar.") from None
    _date(day)
    return value


def _strata(raw: str, study: StudySpec) -> list[tuple[str, str]]:
    factors = study.design.stratification
    pairs: list[tuple[str, str]] = []
    for part in raw.split(";"):
        key, equals, value = (p.strip() for p in part.partition("="))
        if not equals or not key or not value:
            raise TransformError(f"{raw!r} is not key=value;key=value (e.g. country=FR;onset=bulbar).")
        if key not in factors:
            known = ", ".join(factors) if factors else "none: the study is not stratified"
            raise TransformError(
                f"{key!r} is not a stratification factor of {study.acronym} ({known}).", "code-invalid"
            )
        if any(k == key for k, _ in pairs):
            raise TransformError(f"{key!r} is given twice.")
        pairs.append((key, value))
    return pairs


def _transform(row: Row, spec: SourceSpec, values: dict[str, Any], issues: list[RowIssue]) -> None:
    """Apply the columns' transforms in column order (a `with` column is already transformed)."""
    for name, column in spec.all_columns().items():
        if column.transform is None or values.get(name) is None:
            continue
        transform = TRANSFORMS[column.transform]
        table = spec.table(column.table) if column.table else None
        try:
            values[name] = transform.apply(values[name], *(values.get(w) for w in column.with_), table=table)
        except TransformError as exc:
            at = column.with_[exc.about - 1] if 0 < exc.about <= len(column.with_) else name
            issues.append(RowIssue(row.line, at, str(exc), exc.code))
            return


# ---------------------------------------------------------------------------------------- the lookup


@dataclass(frozen=True, slots=True)
class EnrolledSubject:
    """What an import needs to know of an enrolled subject."""

    patient_id: str
    arm: str | None = None  # the arm id, from ResearchSubject.assignedArm
    first_dose: str | None = None  # effectiveDateTime of the subject's earliest administration in the study


class Lookup(Protocol):
    """What the mapping reads beyond the file: the store's subjects and, for dosing, their timed resources."""

    def subject(self, study: StudySpec, number: str) -> EnrolledSubject | None: ...

    def timed_resources(self, study: StudySpec, patient_id: str) -> list[StoredResource]: ...


def instant_key(value: str) -> Any:
    """Orders FHIR dates and date-times by the instant they start at."""
    bounds = date_range(value)
    return bounds[0] if bounds else value


# ----------------------------------------------------------------------------------------- the mapping


@dataclass(frozen=True, slots=True)
class Entry:
    """One PUT of the transaction; `line` is the row it comes from (None: a stored resource whose study time
    was recomputed, written only if still at version `if_match`)."""

    line: int | None
    resource: dict[str, Any]
    if_match: int | None = None

    @property
    def url(self) -> str:
        return f"{self.resource['resourceType']}/{self.resource['id']}"


@dataclass
class MappingResult:
    rows: int
    entries: list[Entry] = field(default_factory=list)
    errors: list[RowIssue] = field(default_factory=list)
    notes: list[RowIssue] = field(default_factory=list)  # informational issues for the summary

    def bundle(self) -> dict[str, Any]:
        """The FHIR R4 transaction Bundle of the mapped resources."""
        entries = []
        for entry in self.entries:
            request: dict[str, Any] = {"method": "PUT", "url": entry.url}
            if entry.if_match is not None:
                request["ifMatch"] = f'W/"{entry.if_match}"'
            entries.append({"resource": entry.resource, "request": request})
        return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _by_line(issue: RowIssue) -> int:
    return issue.line or 0


def resource_id(*parts: str) -> str:
    """A deterministic FHIR id: 20 hex digits of a hash of the study, the source kind and the row's key."""
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=10).hexdigest()


def map_csv(data: bytes, spec: SourceSpec, studies: StudyRegistry, lookup: Lookup) -> MappingResult:
    """Map a CSV file to the entries of one transaction, or to the list of everything wrong with it."""
    rows, unreadable = read_csv(data, spec.all_columns())
    if not rows:
        return MappingResult(0, errors=unreadable)
    records, errors = type_rows(rows, spec, studies)
    result = MappingResult(len(rows) + len(unreadable), errors=sorted(unreadable + errors, key=_by_line))
    context = _Context(spec, lookup, result)
    build = _BUILDERS[spec.builder]
    if spec.builder == "medication_administration":
        context.note_first_doses(records)
    for record in records:
        build(record, context)
    if spec.builder == "medication_administration" and not result.errors:
        context.recompute_study_time()
    result.errors.sort(key=_by_line)  # stable: a row's issues stay in column order
    return result


class _Context:
    """State of one mapping: subjects looked up once, first doses, the entries and issues collected."""

    def __init__(self, spec: SourceSpec, lookup: Lookup, result: MappingResult) -> None:
        self.spec = spec
        self.lookup = lookup
        self.result = result
        self._subjects: dict[tuple[str, str], EnrolledSubject | None] = {}
        self._first_doses: dict[tuple[str, str], str] = {}  # from this dosing file
        self._first: dict[tuple[str, str], str | None] = {}  # the first dose of each subject, all told
        self._times: dict[tuple[str, str, str | None, str | None], dict[str, Any]] = {}
        self._studies: dict[str, StudySpec] = {}

    def id(self, record: Record, *suffix: str) -> str:
        """The id of a resource made from this row: study id, kind, the other key columns, and `suffix`."""
        return resource_id(record.study.id, self.spec.kind, *record.key[1:], *suffix)

    def subject(self, record: Record) -> EnrolledSubject | None:
        """The record's enrolled subject, or None with a row error saying to import enrolment first."""
        number = record.values["subject"]
        key = (record.study.id, number)
        if key not in self._subjects:
            self._subjects[key] = self.lookup.subject(record.study, number)
            self._studies[record.study.id] = record.study
        found = self._subjects[key]
        if found is None:
            self.error(
                record,
                "subject",
                f"subject {number!r} is not enrolled in {record.study.acronym}: import its enrolment first "
                "(enrolment.csv, POST /api/imports/enrolment).",
                "not-found",
            )
        return found

    def first_dose(self, study_id: str, number: str, subject: EnrolledSubject) -> str | None:
        """The earliest of the stored first dose and this file's (dosing) first dose."""
        key = (study_id, number)
        if key not in self._first:
            candidates = [d for d in (subject.first_dose, self._first_doses.get(key)) if d]
            self._first[key] = min(candidates, key=instant_key) if candidates else None
        return self._first[key]

    def note_first_doses(self, records: list[Record]) -> None:
        for record in records:
            key = (record.study.id, record.values["subject"])
            when = record.values["administered_at"]
            if key not in self._first_doses or instant_key(when) < instant_key(self._first_doses[key]):
                self._first_doses[key] = when

    def study_time(
        self, record: Record, subject: EnrolledSubject, when: str, visit: str | None = None
    ) -> dict[str, Any]:
        """The study-time extension (shared between resources of the same day: never mutate it)."""
        first = self.first_dose(record.study.id, record.values["subject"], subject)
        key = (record.study.id, when[:10], first[:10] if first else None, visit)
        if key not in self._times:
            self._times[key] = study_time.compute(record.study, when, first, visit).extension()
        return self._times[key]

    def add(self, record: Record, resource: dict[str, Any]) -> None:
        self.result.entries.append(Entry(record.line, resource))

    def error(self, record: Record, column: str | None, reason: str, code: str = "value") -> None:
        self.result.errors.append(RowIssue(record.line, column, reason, code))

    def note(self, record: Record, columns: list[str], reason: str, severity: str = "information") -> None:
        code = "informational" if severity == "information" else "business-rule"
        self.result.notes.append(RowIssue(record.line, columns[0], reason, code, severity, tuple(columns[1:])))

    def recompute_study_time(self) -> None:
        """After a dosing file: the stored resources of its subjects whose study day or visit changes."""
        written = {entry.url for entry in self.result.entries}
        for (study_id, number), subject in sorted(self._subjects.items()):
            if subject is None:
                continue
            study = self._studies[study_id]
            first = self.first_dose(study_id, number, subject)
            for stored in self.lookup.timed_resources(study, subject.patient_id):
                if stored.content is None or f"{stored.resource_type}/{stored.id}" in written:
                    continue
                content = {k: v for k, v in stored.content.items() if k != "meta"}
                changed = study_time.recompute(content, study, first)
                if changed is not None:
                    self.result.entries.append(Entry(None, changed, stored.version_id))


def _reference(resource_type: str, res_id: str) -> dict[str, str]:
    return {"reference": f"{resource_type}/{res_id}"}


def _quantity(value: int | float, unit: str, code: str | None = None) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": code or unit}


def _category(code: str) -> list[dict[str, Any]]:
    """Observation.category from http://terminology.hl7.org/CodeSystem/observation-category."""
    return [{"coding": [{"system": OBSERVATION_CATEGORY, "code": code, "display": code.capitalize()}]}]


# ------------------------------------------------------------------------------------------- builders


def to_fhir_lab_observation(record: Record, context: _Context) -> None:
    """A lab result -> Observation (https://hl7.org/fhir/R4/observation.html), category laboratory.

    code: the local coding first, then the target (LOINC or measure); valueQuantity in the target UCUM unit
    (or valueCodeableConcept SNOMED CT Positive/Negative); the value as reported in the reported-quantity
    extension; referenceRange converted like the value; the specimen type as a contained Specimen.
    """
    subject = context.subject(record)
    if subject is None:
        return
    values = record.values
    test: LabTest = values["test"]
    result: LabResult = values["value"]
    extensions: list[dict[str, Any]] = []
    observation: dict[str, Any] = {"resourceType": "Observation", "id": context.id(record)}
    if test.specimen is not None:
        observation["contained"] = [
            {
                "resourceType": "Specimen",
                "id": "specimen",
                "type": {"coding": [test.specimen.coding()], "text": test.specimen.display},
                "subject": _reference("Patient", subject.patient_id),
            }
        ]
    observation["extension"] = extensions
    observation.update(
        {
            "status": "final",
            "category": _category(test.category),
            "code": {
                "coding": [
                    {"system": LOCAL_LAB, "code": record.cells["test"], "display": test.display},
                    {"system": test.code.system, "code": test.code.code, "display": test.code_display},
                ],
                "text": test.display,
            },
            "subject": _reference("Patient", subject.patient_id),
            "effectiveDateTime": values["collected_at"],
        }
    )
    low, high = values.get("ref_low"), values.get("ref_high")
    if result.conversion is not None:
        conversion = result.conversion
        assert result.value is not None and result.reported is not None
        extensions.append(
            {
                "url": REPORTED_QUANTITY_URL,
                "valueQuantity": _quantity(result.reported, conversion.reported_unit, conversion.reported_code),
            }
        )
        observation["valueQuantity"] = _quantity(result.value, conversion.target_unit)
        if low is not None and high is not None and low > high:
            context.error(record, "ref_low", f"the reference range is inverted: ref_low {low} > ref_high {high}.")
            return
        reference_range = {}
        if low is not None:
            reference_range["low"] = _quantity(conversion.apply(low), conversion.target_unit)
        if high is not None:
            reference_range["high"] = _quantity(conversion.apply(high), conversion.target_unit)
        if reference_range:
            observation["referenceRange"] = [reference_range]
    else:
        assert result.result is not None
        observation["valueCodeableConcept"] = {"coding": [result.result], "text": result.result["display"]}
        if low is not None or high is not None:
            context.error(record, "ref_low", f"{test.display} is positive/negative: it has no reference range.")
            return
    if values.get("interpretation") is not None:
        observation["interpretation"] = [{"coding": [values["interpretation"]]}]
    if test.specimen is not None:
        observation["specimen"] = {"reference": "#specimen"}
    extensions.append(context.study_time(record, subject, values["collected_at"]))
    context.add(record, observation)


def to_fhir_scale_observations(record: Record, context: _Context) -> None:
    """A rating scale -> item Observations and a total Observation (https://hl7.org/fhir/R4/observation.html).

    The total is computed here from the items (weights and max-of groups from the spec); it lists the item
    Observations in hasMember and derivedFrom, or (SELENA-SLEDAI) carries the items as components. A missing
    item leaves the total without a value: dataAbsentReason, and a note naming the missing items.
    """
    scale = context.spec.scale
    assert scale is not None
    values = record.values
    present = {item.column: values[item.column] for item in scale.items if values.get(item.column) is not None}
    if not present:
        context.error(record, scale.items[0].column, "every item is empty: there is nothing to import.", "required")
        return
    subject = context.subject(record)
    if subject is None:
        return
    when = values["assessed_at"]
    time = context.study_time(record, subject, when, values.get("visit"))
    common = {
        "status": "final",
        "category": _category(scale.category),
    }
    members: list[dict[str, str]] = []
    components: list[dict[str, Any]] = []
    for item in scale.items:
        coding = {"system": item.code.system, "code": item.code.code, "display": item.display}
        value = present.get(item.column)
        if scale.items_as == "components":
            component: dict[str, Any] = {"code": {"coding": [coding], "text": item.display}}
            if value is None:
                component["dataAbsentReason"] = _absent("unknown", "Not recorded")
            else:
                component["valueBoolean"] = value == 1
            components.append(component)
            continue
        if value is None:
            continue
        item_id = context.id(record, item.column)
        context.add(
            record,
            {
                "resourceType": "Observation",
                "id": item_id,
                "extension": [time],
                **common,
                "code": {"coding": [coding]},
                "subject": _reference("Patient", subject.patient_id),
                "effectiveDateTime": when,
                "valueQuantity": _quantity(value, "{score}"),
            },
        )
        members.append(_reference("Observation", item_id))
    total, missing = scale_total(scale, values)
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": context.id(record, "total"),
        "extension": [time],
        **common,
        "code": {
            "coding": [
                {"system": scale.total.code.system, "code": scale.total.code.code, "display": scale.total.display}
            ]
        },
        "subject": _reference("Patient", subject.patient_id),
        "effectiveDateTime": when,
    }
    if total is not None:
        observation["valueQuantity"] = _quantity(total, "{score}")
    else:
        names = ", ".join(missing)
        observation["dataAbsentReason"] = _absent("unknown", f"Not computed: {names} missing")
        observation["note"] = [{"text": f"Total not computed: {names} {'is' if len(missing) == 1 else 'are'} empty."}]
        context.note(
            record,
            missing,
            f"{names} {'is' if len(missing) == 1 else 'are'} empty, so the {scale.total.display} was not computed; "
            "the total Observation says so (dataAbsentReason, note).",
        )
    observation["method"] = {"text": scale.total.method}
    if members:
        observation["hasMember"] = members
        observation["derivedFrom"] = list(members)
    if components:
        observation["component"] = components
    context.add(record, observation)


def scale_total(scale: Scale, values: dict[str, Any]) -> tuple[int | None, list[str]]:
    """The weighted total (each max-of group counts its highest present item), or None and the missing items.

    An item outside the groups that is empty, or a group whose items are all empty, leaves the total uncomputed.
    """
    grouped = {column for group in scale.max_of for column in group}
    weights = {item.column: item.weight for item in scale.items}
    missing = [i.column for i in scale.items if i.column not in grouped and values.get(i.column) is None]
    total = sum(values[i.column] * i.weight for i in scale.items if i.column not in grouped and i.column not in missing)
    for group in scale.max_of:
        scores = [values[c] * weights[c] for c in group if values.get(c) is not None]
        if scores:
            total += max(scores)
        else:
            missing.extend(group)
    ordered = [i.column for i in scale.items if i.column in missing]
    return (None, ordered) if ordered else (total, [])


def _absent(code: str, text: str) -> dict[str, Any]:
    """A dataAbsentReason (http://terminology.hl7.org/CodeSystem/data-absent-reason)."""
    display = {"unknown": "Unknown"}[code]
    return {"coding": [{"system": DATA_ABSENT_REASON, "code": code, "display": display}], "text": text}


def to_fhir_enrolment(record: Record, context: _Context) -> None:
    """An enrolment row -> Patient (https://hl7.org/fhir/R4/patient.html) and R4 ResearchSubject
    (https://hl7.org/fhir/R4/researchsubject.html), both with id = a hash of study and subject number.

    ResearchSubject: identifier = the subject number, period = consent to end date, assignedArm = the arm's
    name (R4 matches ResearchStudy.arm.name), randomisation date, strata and end reason as extensions.
    """
    values = record.values
    study = record.study
    for earlier, later in (
        ("birth_date", "consent_date"),
        ("consent_date", "randomisation_date"),
        ("consent_date", "end_date"),
        ("birth_date", "death_date"),
    ):
        if values.get(earlier) and values.get(later) and values[later] < values[earlier]:
            context.error(record, later, f"{values[later]} is before {earlier} {values[earlier]}.")
            return
    res_id = context.id(record)
    subject_identifier = {"system": f"{SID}/{study.id}/subject", "value": values["subject"]}
    identifiers = [subject_identifier]
    if values.get("site_patient_id"):
        identifiers.append({"system": f"{SID}/site/{values['site']}/patient", "value": values["site_patient_id"]})
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": res_id,
        "identifier": identifiers,
        "gender": values["sex"],
        "birthDate": values["birth_date"],
    }
    if values.get("death_date"):
        patient["deceasedDateTime"] = values["death_date"]
    extensions: list[dict[str, Any]] = []
    if values.get("randomisation_date"):
        extensions.append({"url": RANDOMISATION_DATE_URL, "valueDate": values["randomisation_date"]})
    for key, value in values.get("strata") or ():
        extensions.append(
            {
                "url": STRATUM_URL,
                "extension": [{"url": "key", "valueString": key}, {"url": "value", "valueString": value}],
            }
        )
    if values.get("end_reason"):
        extensions.append({"url": END_REASON_URL, "valueString": values["end_reason"]})
    research_subject: dict[str, Any] = {"resourceType": "ResearchSubject", "id": res_id}
    if extensions:
        research_subject["extension"] = extensions
    period = {"start": values["consent_date"]}
    if values.get("end_date"):
        period["end"] = values["end_date"]
    research_subject.update(
        {
            "identifier": [dict(subject_identifier)],
            "status": values["status"],
            "period": period,
            "study": _reference("ResearchStudy", study.id),
            "individual": _reference("Patient", res_id),
        }
    )
    if values.get("arm"):
        research_subject["assignedArm"] = study.arm(values["arm"]).name
    context.add(record, patient)
    context.add(record, research_subject)


def to_fhir_adverse_event(record: Record, context: _Context) -> None:
    """An adverse event -> R4 AdverseEvent (https://hl7.org/fhir/R4/adverseevent.html), actuality actual.

    event: the MedDRA PT; date: onset; the CTCAE grade as the AE Clinical Research IG ae-grade extension
    (NCIt) and as severity; resolution in its resolve-date extension; seriousness; outcome; relatedness as
    suspectEntity.causality.assessment, the suspect entity being the subject's arm's intervention(s) as
    contained Medications (the study intervention, in words, when the subject has no arm yet).
    """
    values = record.values
    if values.get("resolution_date") and values["resolution_date"] < values["onset_date"]:
        context.error(
            record, "resolution_date", f"{values['resolution_date']} is before onset_date {values['onset_date']}."
        )
        return
    subject = context.subject(record)
    if subject is None:
        return
    study = record.study
    grade: Grade = values["ctcae_grade"]
    extensions: list[dict[str, Any]] = [
        {
            "url": AE_GRADE_URL,
            "valueCodeableConcept": {"coding": [grade.coding()], "text": f"CTCAE grade {record.cells['ctcae_grade']}"},
        }
    ]
    if values.get("resolution_date"):
        extensions.append({"url": AE_RESOLVE_DATE_URL, "valueDateTime": values["resolution_date"]})
    extensions.append(context.study_time(record, subject, values["onset_date"]))
    medications = _suspect_medications(study, subject)
    assessment = {"coding": [values["relatedness"]], "text": values["relatedness"]["display"]}
    event_coding = values["meddra_pt_code"]
    adverse_event: dict[str, Any] = {
        "resourceType": "AdverseEvent",
        "id": context.id(record),
        "contained": medications,
        "extension": extensions,
        "identifier": {
            "system": f"{SID}/{study.id}/adverse-event",
            "value": f"{values['subject']}-{values['ae_number']}",
        },
        "actuality": "actual",
        "event": {"coding": [event_coding], "text": event_coding.get("display", event_coding["code"])},
        "subject": _reference("Patient", subject.patient_id),
        "date": values["onset_date"],
        "seriousness": {"coding": [values["serious"]]},
        "severity": {"coding": [grade.severity.coding()]},
        "outcome": {"coding": [values["outcome"]]},
        "suspectEntity": [
            {"instance": {"reference": f"#{m['id']}"}, "causality": [{"assessment": assessment}]} for m in medications
        ],
        "study": [_reference("ResearchStudy", study.id)],
    }
    context.add(record, adverse_event)


def _suspect_medications(study: StudySpec, subject: EnrolledSubject) -> list[dict[str, Any]]:
    if subject.arm is None:
        return [
            {
                "resourceType": "Medication",
                "id": "study-intervention",
                "code": {"text": f"{study.acronym} study intervention (no arm assigned)"},
            }
        ]
    medications = []
    for intervention_id in study.arm(subject.arm).interventions:
        intervention = study.intervention(intervention_id)
        medications.append(
            {"resourceType": "Medication", "id": intervention.id, "code": _medication_code(study, intervention_id)}
        )
    return medications


def _medication_code(study: StudySpec, intervention_id: str) -> dict[str, Any]:
    intervention = study.intervention(intervention_id)
    concept: dict[str, Any] = {}
    if intervention.code is not None:
        concept["coding"] = [{"system": intervention.code.system, "code": intervention.code.code}]
    concept["text"] = intervention.name
    return concept


def to_fhir_medication_administration(record: Record, context: _Context) -> None:
    """A study drug administration -> MedicationAdministration (https://hl7.org/fhir/R4/medicationadministration.html).

    status completed; medicationCodeableConcept from the study spec's intervention (its code, text = name);
    dosage.route (SNOMED CT) and dosage.dose (UCUM); the study is named by the study-time extension.
    """
    values = record.values
    if (values.get("dose") is None) != (values.get("dose_unit") is None):
        missing = "dose_unit" if values.get("dose_unit") is None else "dose"
        context.error(record, missing, "dose and dose_unit go together: give both, or neither (placebo).", "required")
        return
    subject = context.subject(record)
    if subject is None:
        return
    study = record.study
    intervention = values["intervention"]
    if subject.arm is not None and intervention not in study.arm(subject.arm).interventions:
        context.note(
            record,
            ["intervention"],
            f"{intervention!r} is not an intervention of arm {subject.arm!r}, to which subject {values['subject']!r} "
            "is assigned; imported as recorded (check for a dispensing error or a wrong arm in enrolment).",
            "warning",
        )
    administration: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "id": context.id(record),
        "extension": [context.study_time(record, subject, values["administered_at"])],
        "status": "completed",
        "medicationCodeableConcept": _medication_code(study, intervention),
        "subject": _reference("Patient", subject.patient_id),
        "effectiveDateTime": values["administered_at"],
        "dosage": {"route": {"coding": [values["route"]]}},
    }
    if values.get("dose") is not None:
        administration["dosage"]["dose"] = _quantity(values["dose"], values["dose_unit"])
    context.add(record, administration)


_BUILDERS: dict[str, Callable[[Record, _Context], None]] = {
    "lab_observation": to_fhir_lab_observation,
    "scale_observations": to_fhir_scale_observations,
    "enrolment": to_fhir_enrolment,
    "adverse_event": to_fhir_adverse_event,
    "medication_administration": to_fhir_medication_administration,
}


# ------------------------------------------------------------------------------------ against a Store


class StoreLookup:
    """`Lookup` over a Store: ResearchSubject by subject-number identifier, the subject's administrations."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._timed: dict[tuple[str, str], list[StoredResource]] = {}

    def subject(self, study: StudySpec, number: str) -> EnrolledSubject | None:
        identifier = f"{SID}/{study.id}/subject|{number}"
        found = _search_all(self.store, "ResearchSubject", [("identifier", identifier)])
        for stored in found:
            content = stored.content or {}
            if (content.get("study") or {}).get("reference") != f"ResearchStudy/{study.id}":
                continue
            reference = (content.get("individual") or {}).get("reference", "")
            if not reference.startswith("Patient/"):
                continue
            patient_id = reference.removeprefix("Patient/")
            arm = next((a.id for a in study.arms if a.name == content.get("assignedArm")), None)
            administrations = [
                r.content["effectiveDateTime"]
                for r in self._resources(study, patient_id, "MedicationAdministration")
                if r.content and isinstance(r.content.get("effectiveDateTime"), str)
            ]
            first = min(administrations, key=instant_key) if administrations else None
            return EnrolledSubject(patient_id, arm, first)
        return None

    def timed_resources(self, study: StudySpec, patient_id: str) -> list[StoredResource]:
        return [r for kind in study_time.TIMED_TYPES for r in self._resources(study, patient_id, kind)]

    def _resources(self, study: StudySpec, patient_id: str, resource_type: str) -> list[StoredResource]:
        key = (f"{study.id}/{patient_id}", resource_type)
        if key not in self._timed:
            found = _search_all(self.store, resource_type, [("subject", f"Patient/{patient_id}")])
            self._timed[key] = [r for r in found if r.content and study_time.study_of(r.content) == study.id]
        return self._timed[key]


def _search_all(store: Store, resource_type: str, params: list[tuple[str, str]]) -> list[StoredResource]:
    found: list[StoredResource] = []
    token: str | None = None
    while True:
        pairs = [*params, ("_count", "1000")] + ([("_page", token)] if token else [])
        page = store.search(parse_search(resource_type, pairs, max_count=1000))
        found.extend(page.resources)
        if not page.next_page:
            return found
        token = page.next_page


def _current(store: Store, entries: list[Entry]) -> dict[str, StoredResource]:
    """The stored current versions of the entries' targets, by `Type/id`."""
    ids: dict[str, list[str]] = {}
    for entry in entries:
        ids.setdefault(entry.resource["resourceType"], []).append(entry.resource["id"])
    current: dict[str, StoredResource] = {}
    for resource_type, type_ids in ids.items():
        for start in range(0, len(type_ids), 200):
            chunk = ",".join(type_ids[start : start + 200])
            for stored in _search_all(store, resource_type, [("_id", chunk)]):
                current[f"{resource_type}/{stored.id}"] = stored
    return current


@dataclass
class ImportSummary:
    """What an import did (or, dry run, would do): per resource type, created / updated / unchanged."""

    spec: str
    rows: int
    dry_run: bool
    resources: dict[str, dict[str, int]]
    issues: list[Issue]

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "rows": self.rows,
            "dryRun": self.dry_run,
            "resources": self.resources,
            "issues": [i.to_fhir() for i in self.issues],
        }


def _count(counts: dict[str, dict[str, int]], resource_type: str, outcome: str) -> None:
    by_type = counts.setdefault(resource_type, {"created": 0, "updated": 0, "unchanged": 0})
    by_type[outcome] += 1


def _same(new: dict[str, Any], stored: StoredResource, normalize: Any) -> bool:
    content = normalize(new["resourceType"], new) if normalize is not None else new
    old = dict(stored.content or {})
    meta = {k: v for k, v in (old.pop("meta", None) or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        old["meta"] = meta
    return content == old


def run_import(
    store: Store,
    studies: StudyRegistry,
    spec: SourceSpec,
    data: bytes,
    *,
    dry_run: bool = False,
    base_url: str = "http://localhost/fhir",
    validator: ValidatorPool = INLINE,
) -> ImportSummary:
    """Import one CSV file in one transaction; FhirError (422, one OperationOutcome) when anything is wrong."""
    result = map_csv(data, spec, studies, StoreLookup(store))
    if result.errors:
        raise _reject(result.errors)
    current = _current(store, result.entries)
    counts: dict[str, dict[str, int]] = {}
    if dry_run:
        problems = [
            issue.under(f"Bundle.entry[{index}].resource")
            for index, entry in enumerate(result.entries)
            for issue in validation_issues(entry.resource)
        ]
        if problems:
            raise _at_rows(FhirError(422, problems), result.entries)
        for entry in result.entries:
            stored = current.get(entry.url)
            outcome = (
                "created"
                if stored is None
                else "unchanged"
                if _same(entry.resource, stored, store.normalize)
                else "updated"
            )
            _count(counts, entry.resource["resourceType"], outcome)
    else:
        options = bundle.BundleOptions(base_url, max_entries=max(len(result.entries), 1), validator=validator)
        try:
            response = bundle.process(store, result.bundle(), options)
        except FhirError as exc:
            raise _at_rows(exc, result.entries) from None
        for entry, answer in zip(result.entries, response["entry"], strict=True):
            status = answer["response"]["status"]
            stored = current.get(entry.url)
            version = answer["response"].get("etag", "").removeprefix('W/"').rstrip('"')
            if status.startswith("201") or stored is None:
                outcome = "created"
            elif version == str(stored.version_id):
                outcome = "unchanged"
            else:
                outcome = "updated"
            _count(counts, entry.resource["resourceType"], outcome)
    notes = [n.to_issue() for n in result.notes]
    log.info("import %s: %d rows, %s%s", spec.kind, result.rows, counts, " (dry run)" if dry_run else "")
    return ImportSummary(spec.kind, result.rows, dry_run, counts, notes)


_ENTRY = re.compile(r"^Bundle\.entry\[(\d+)\](?:\.resource)?\.?(.*)$")


def _at_rows(exc: FhirError, entries: list[Entry]) -> FhirError:
    """A transaction's OperationOutcome with its `Bundle.entry[i]` locations turned into the rows they came from."""
    issues = []
    for issue in exc.issues:
        match = next((m for e in issue.expression if (m := _ENTRY.match(e))), None)
        if match is None:
            issues.append(issue)
            continue
        entry = entries[int(match.group(1))]
        element = f"{entry.resource['resourceType']}.{match.group(2)}".rstrip(".")
        if entry.line is None:
            what, expression = f"{entry.url} (stored, its study time recomputed) cannot be written", (entry.url,)
        else:
            what = f"Line {entry.line}: the {entry.resource['resourceType']} made from this row is not accepted"
            expression = (f"line[{entry.line}]",)
        issues.append(Issue(issue.code, f"{what} ({element}): {issue.diagnostics}", expression, issue.severity))
    return FhirError(exc.status, issues, exc.headers)


# -------------------------------------------------------------------------------------- directories

# Subjects first (everything else refers to them), then doses (study time counts from the first one).
IMPORT_ORDER = ("enrolment", "dosing")


class ImportFileError(Exception):
    """A file of a directory import that was refused; carries the file and the OperationOutcome."""

    def __init__(self, path: Path, error: FhirError) -> None:
        self.path = path
        self.error = error
        details = "; ".join(i.diagnostics for i in error.issues[:5])
        super().__init__(f"{path}: {details}")


def import_order(paths: Iterable[Path]) -> list[Path]:
    """enrolment.csv, dosing.csv, then the other files by name."""
    rank = {kind: index for index, kind in enumerate(IMPORT_ORDER)}
    return sorted(paths, key=lambda p: (rank.get(p.stem, len(rank)), p.name))


def import_directory(
    store: Store,
    studies: StudyRegistry,
    directory: Path,
    sources: SourceRegistry | None = None,
    *,
    base_url: str = "http://localhost/fhir",
    validator: ValidatorPool = INLINE,
) -> list[ImportSummary]:
    """Import every ``<directory>/<study>/<kind>.csv`` (fixtures/studies), enrolment and dosing first.

    Raises ImportFileError on the first file refused (the files before it stay imported), and ValueError for
    a file no spec reads. Pass the server's ValidatorPool: model validation dominates big files.
    """
    registry = sources or load_sources(Path(__file__).resolve().parents[2] / "mappings" / "sources")
    summaries = []
    for study_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
        for path in import_order(study_dir.glob("*.csv")):
            spec = registry.get(path.stem)
            if spec is None:
                raise ValueError(f"{path}: no source spec {path.stem!r} (known: {', '.join(registry.kinds())})")
            try:
                summary = run_import(store, studies, spec, path.read_bytes(), base_url=base_url, validator=validator)
                summaries.append(summary)
            except FhirError as exc:
                raise ImportFileError(path, exc) from None
    return summaries


def _iter_issues(error: FhirError) -> Iterator[str]:
    for issue in error.issues:
        where = ", ".join(issue.expression)
        yield f"{where}: {issue.diagnostics}" if where else issue.diagnostics


def describe(error: FhirError) -> str:
    """An OperationOutcome as lines of text (for the command line)."""
    return "\n".join(_iter_issues(error))


__all__ = [
    "EnrolledSubject",
    "Entry",
    "ImportFileError",
    "ImportSummary",
    "Lookup",
    "MappingResult",
    "RowIssue",
    "StoreLookup",
    "describe",
    "import_directory",
    "map_csv",
    "read_csv",
    "resource_id",
    "run_import",
    "scale_total",
    "type_rows",
]
