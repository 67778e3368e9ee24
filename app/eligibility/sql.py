"""Set-based eligibility: a study's criteria compiled to one SQL statement over the eligibility facts.

The statement decides every criterion for the whole Patient population at once (or a list of patients)
and must agree, outcome for outcome, with the reference evaluator (`app.eligibility.reference`), which
is the spec together with mappings/README.md ("Three-valued semantics"). It reads the `clinical_fact` rows
(`app.eligibility.facts`: per clinical resource and coding, its patient, status, date span, value and
positivity in one row) and, for age, sex and other studies, the index rows of Patients and
ResearchSubjects; never resource JSON. On PostgreSQL a whole population is screened in shards of Patient
id ranges, the same statement on several connections reading one exported snapshot (`screen`, below).

Shape (SQLAlchemy Core, so one compiler serves SQLite and PostgreSQL; every value is a bound parameter):

- per resource type, one candidate CTE for all the leaves reading that type (`observations` for
  thresholds, `readings` for positive/negative results, `conditions`, `medications`): a row per (leaf, fact)
  from a range scan of the facts' code index per alternative of a leaf's codes, filtered on the row's own
  status and date: no joins;
- each leaf's candidates get a score: 2 true, 1 unknown, 0 false. Kleene's "any" is the maximum on
  false < unknown < true, so a leaf's rules become a per-candidate score and a MAX per patient; `which:
  latest` keeps each patient's latest usable candidate (ROW_NUMBER()); one scoring pass per type covers
  all its leaves (CASE on the leaf number);
- each scoring pass is pivoted to one row per patient (a column per leaf) and the pivots are joined to
  the population (hash aggregates and hash joins of one row per patient); a patient without a leaf's
  rows gets the leaf's `missing` default;
- composite nodes are integer arithmetic over the leaves' scores (`kleene_score`): all_of the minimum,
  any_of the maximum, not 2 - x, at_least counts trues and unknowns;
- criterion outcomes (0 pass, 1 fail, 2 unknown) and the patient status are computed in SQL; counts
  over the population and one keyset page come out of the same statement.

Dates are compared as the index stores them (UTC instant ranges): a day boundary is an instant at
00:00 UTC, so "first day >= window start" is `low >= start 00:00Z`, and a resource's day is its UTC
date. Thresholds compare `canonical_value` (UCUM canonical, `app.fhir.ucum`) with the reference
evaluator's tolerance: equal when |a - b| <= RELATIVE_TOLERANCE * max(|a|, |b|).
"""

from __future__ import annotations

import calendar
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    CTE,
    ColumnElement,
    Connection,
    Date,
    DateTime,
    Engine,
    Float,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    case,
    cast,
    false,
    func,
    literal,
    null,
    or_,
    select,
    true,
    union_all,
)

from app.eligibility import criteria as c
from app.eligibility import reference as ref
from app.eligibility import rules
from app.eligibility.dates import minus_window
from app.eligibility.outcome import Status
from app.eligibility.population import OUTCOME_CODES, STATUSES, Screening, read_screening
from app.fhir.definitions import element_defs, value_set_codes
from app.fhir.ucum import RELATIVE_TOLERANCE, conversion
from app.runtime import usable_cores
from app.store.schema import Resource, clinical_fact, idx_date, idx_reference, idx_token
from app.store.search import param_rows

resource_table = Resource.__table__  # type: ignore[attr-defined]

TRUE, UNKNOWN, FALSE = 2, 1, 0  # leaf scores: Kleene's order false < unknown < true
PASS, FAIL, UNDECIDED = (next(code for code, name in OUTCOME_CODES.items() if name == outcome)
                         for outcome in ("pass", "fail", "unknown"))  # fmt: skip

PATIENT_IDS = "patient_ids"  # the expanding bind parameter restricting the population
# The alternatives a fact row's coding may match to count for a leaf (their OR), each one range of the code index.
Matcher = Callable[[Any], list[ColumnElement[bool]]]


PATIENT_FROM, PATIENT_TO = "patient_from", "patient_to"  # the bind parameters of a shard's Patient id range


@dataclass(frozen=True, slots=True)
class PatientRange:
    """A shard of the population: the live Patients with ids from `first` to `last`, both included. Shards are
    bound parameters of one statement, built and compiled once for all of them."""

    first: str
    last: str

    def parameters(self) -> dict[str, str]:
        return {PATIENT_FROM: self.first, PATIENT_TO: self.last}


# PostgreSQL settings for a whole-population screening (transaction-local): its joins and aggregates span
# every candidate, where hash joins in memory win; the planner's row estimates for the candidate CTEs are
# far too low and would otherwise pick nested loops of index look-ups. (Turning bitmap scans off too, so the
# covering code index answers alone, was measured: slower at 100,000 patients, no better at 1,000,000.)
POPULATION_SETTINGS = ("SET LOCAL work_mem = '256MB'", "SET LOCAL enable_nestloop = off")

# A whole-population screening on PostgreSQL runs in shards: ranges of Patient ids, one statement each on its
# own connection, `parallel` at a time. One statement keeps about one core busy (PostgreSQL parallelises the
# scans of a plan, not the windows, aggregates and joins above them, where the time goes); shards keep every
# core busy, and each shard's sorts and hash tables are smaller. Every shard reads the snapshot the
# coordinating transaction exports (as `pg_dump --jobs` does): the counts are those of one moment even while
# bundles are being written. Within a shard, PostgreSQL's own parallel workers only compete with the other
# shards for the same cores, so they are turned off when shards run side by side.
SHARD_PATIENTS = 250_000  # at most this many per shard: fewer, larger shards were faster (bench/README.md)
MIN_SHARD_PATIENTS = 25_000  # below twice this a population is one statement: shards would cost more than they save
# Connections: a sharded screening holds its coordinator's and up to MAX_PARALLEL shards' from the store's pool
# (50), and at most SHARDED_SCREENINGS run at once in a process (others wait), so screenings cannot starve the
# FHIR requests of connections.
MAX_PARALLEL = 8
SHARDED_SCREENINGS = threading.BoundedSemaphore(2)
SHARD_SETTINGS = ("SET LOCAL max_parallel_workers_per_gather = 0",)  # when shards run side by side
# The coordinator's transaction idles while its shards run: a server-wide idle-in-transaction timeout shorter
# than a screening would end it, and its exported snapshot with it.
COORDINATOR_SETTINGS = ("SET LOCAL idle_in_transaction_session_timeout = 0",)
_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+-[0-9]+")


def _instant(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _glob_literal(text: str) -> str:
    """`text` as a literal GLOB prefix (SQLite's case-sensitive LIKE): *, ? and [ in brackets."""
    return "".join(f"[{ch}]" if ch in "*?[" else ch for ch in text)


def _like_literal(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def age_cutoff(as_of: date, years: int) -> date | None:
    """The latest birth date with an age of at least `years` on `as_of` (None: nobody is that old).

    `years` before `as_of`, with 29 February falling back to the 28th: someone born on 29 February
    ages on 1 March in other years, so on 28 February they are still a year short."""
    year = as_of.year - years
    if year < 1:
        return None
    day = min(as_of.day, calendar.monthrange(year, as_of.month)[1])
    return date(year, as_of.month, day)


class _Dialect:
    """The few expressions that differ between PostgreSQL and SQLite."""

    def __init__(self, name: str) -> None:
        self.postgresql = name == "postgresql"

    def instant(self, day: date) -> ColumnElement[Any]:
        """00:00 UTC on `day`, typed like the index tables' timestamps."""
        return bindparam(None, _instant(day), type_=DateTime(timezone=True))

    def day(self, instant: ColumnElement[Any]) -> ColumnElement[Any]:
        """The UTC date of an index timestamp: a date (PostgreSQL) or 'YYYY-MM-DD' text (SQLite)."""
        if self.postgresql:
            return cast(func.timezone("UTC", instant), Date)
        return func.substr(instant, 1, 10)

    def date_value(self, day: date) -> ColumnElement[Any]:
        if self.postgresql:
            return bindparam(None, day, type_=Date)
        return bindparam(None, day.isoformat(), type_=String)

    def plus_days(self, day: ColumnElement[Any], days: int) -> ColumnElement[Any]:
        """A comparable form of `day + days` (julian day numbers on SQLite)."""
        if self.postgresql:
            return day + bindparam(None, days, type_=Integer)
        return func.julianday(day) + days

    def comparable_day(self, day: ColumnElement[Any]) -> ColumnElement[Any]:
        return day if self.postgresql else func.julianday(day)

    def parts(self, day: ColumnElement[Any]) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
        """(year * 12 + month, day of month) of a day, as integers."""
        if self.postgresql:
            year, month, dom = (cast(func.date_part(part, day), Integer) for part in ("year", "month", "day"))
        else:
            year, month, dom = (
                cast(func.substr(day, start, length), Integer) for start, length in ((1, 4), (6, 2), (9, 2))
            )
        return year * 12 + month, dom

    def prefix(self, column: ColumnElement[Any], prefix: str) -> ColumnElement[bool]:
        """Case-sensitive prefix match (SQLite's LIKE ignores case: GLOB there)."""
        if self.postgresql:
            return column.like(_like_literal(prefix) + "%", escape="\\")
        return column.op("GLOB", is_comparison=True)(_glob_literal(prefix) + "*")

    def first_three_between(self, column: ColumnElement[Any], low: str, high: str) -> ColumnElement[bool]:
        """ICD-10 blocks compare code points (byte order), as Python does, whatever the database collation."""
        first: ColumnElement[Any] = func.substr(column, 1, 3)
        if self.postgresql:
            first = first.collate("C")
        # the same codes as a range of the code index (byte order): first three >= low <=> code >= low, and
        # first three <= high <=> code < high with its last character incremented ("D49" -> "D4:")
        after_high = high[:-1] + chr(ord(high[-1]) + 1)
        if self.postgresql:  # the index's text_pattern_ops compare bytes
            in_range = and_(
                column.op("~>=~", is_comparison=True)(low), column.op("~<~", is_comparison=True)(after_high)
            )
        else:  # SQLite's BINARY collation compares bytes
            in_range = and_(column >= low, column < after_high)
        return and_(in_range, first.between(low, high))


def _equal(a: ColumnElement[Any], b: ColumnElement[Any]) -> ColumnElement[bool]:
    """math.isclose(a, b, rel_tol=RELATIVE_TOLERANCE): |a - b| <= tol * max(|a|, |b|)."""
    difference = func.abs(a - b)
    return or_(a == b, difference <= RELATIVE_TOLERANCE * func.abs(a), difference <= RELATIVE_TOLERANCE * func.abs(b))


def _compare(a: ColumnElement[Any], comparator: str, b: ColumnElement[Any]) -> ColumnElement[bool]:
    """`reference.compare` in SQL: the comparison with values equal within the tolerance counted as equal."""
    equal = _equal(a, b)
    if comparator == "=":
        return equal
    if comparator == "<":
        return and_(a < b, ~equal)
    if comparator == "<=":
        return or_(a < b, equal)
    if comparator == ">":
        return and_(a > b, ~equal)
    if comparator == ">=":
        return or_(a > b, equal)
    raise ValueError(f"unknown comparator {comparator!r}")


def _float(value: float) -> ColumnElement[Any]:
    return bindparam(None, float(value), type_=Float)


@dataclass(frozen=True, slots=True)
class _Spec:
    """A leaf as the first pass met it: its kind, node and number."""

    kind: str
    node: Any
    number: int


def _complement(resource_type: str, counting: frozenset[str]) -> list[str]:
    """The status codes of a resource type's required value set that do not count: a resource always has one
    status from that set (R4 1..1, checked on write), so "status counts" is "no status outside `counting`"."""
    binding = element_defs(resource_type)["status"].value_set
    codes = value_set_codes(binding) if binding else None
    if codes is None:  # pragma: no cover - the R4 definitions bind every status used here
        raise ValueError(f"{resource_type}.status has no enumerable required value set")
    return sorted({code for found in codes.values() for code in found} - counting)


def _numbers(specs: Sequence[_Spec]) -> tuple[int, ...]:
    return tuple(spec.number for spec in specs)


class ScreeningCompiler:
    """Builds the screening statement for one study, screening date and dialect.

    Two passes: `expression` walks each criterion and numbers its leaves; `build` then writes one candidate
    CTE per resource type (observations, readings, conditions, medications) holding every leaf's candidate
    facts with the leaf's number, and one scoring pass per type (CASE on the leaf number) giving (leaf,
    patient_id, score) rows, which `compile_screening` pivots per patient."""

    def __init__(
        self,
        dialect: str,
        as_of: date,
        study_reference: str,
        *,
        restrict_patients: bool = False,
        in_range: bool = False,
    ) -> None:
        self.sql = _Dialect(dialect)
        self.as_of = as_of
        key = ref.reference_key(study_reference) or study_reference
        self.study_type, _, self.study_id = key.rpartition("/")
        self.restrict = restrict_patients
        self.in_range = in_range
        self.next_day = self.sql.instant(as_of + timedelta(days=1))  # data dated on or after it is future
        self.specs: list[_Spec] = []
        self.missing: list[bool | None] = []

    # ------------------------------------------------------------------------------------------ first pass

    def expression(self, expression: c.Expression) -> Any:
        """The expression as a tree over leaf numbers: ("leaf", n), ("all_of", [...]), ("any_of", [...]),
        ("not", tree), ("at_least", n, [...])."""
        kind = expression.kind
        node = expression.node
        if kind in ("all_of", "any_of"):
            return (kind, [self.expression(child) for child in node])
        if kind == "not":
            return ("not", self.expression(node))
        if kind == "at_least":
            return ("at_least", node.n, [self.expression(child) for child in node.of])
        spec = _Spec(kind, node, len(self.specs))
        self.specs.append(spec)
        return ("leaf", spec.number)

    # ------------------------------------------------------------------------------------------ helpers

    def patients(self, column: Any) -> ColumnElement[bool]:
        """`column` (a Patient id) is one of the patients asked for, or in the shard's id range (always true
        for the whole population)."""
        if self.restrict:
            listed: ColumnElement[bool] = column.in_(bindparam(PATIENT_IDS, expanding=True))
            return listed
        if self.in_range:
            shard: ColumnElement[bool] = column.between(
                bindparam(PATIENT_FROM, type_=String), bindparam(PATIENT_TO, type_=String)
            )
            return shard
        return true()

    def scoped(self, table: Any, resource_type: str, param: str | Sequence[str]) -> Select[Any]:
        """`select().select_from(...)` over a table's index rows of one type and parameter(s). For a list of
        patients the rows are reached from the resource table's patient index, then the index table's
        (res_type, res_id) index: a few patients cost a few look-ups, not a scan of the parameter's rows
        (the index tables have no patient index)."""
        rows = self._rows(table, resource_type, param)
        if resource_type == "Patient":
            return select().select_from(table).where(rows, self.patients(table.c.res_id))
        if not self.restrict:
            # whole population or a shard: another shard's rows find no patient in the population's outer join
            return select().select_from(table).where(rows)
        owner = resource_table.alias("owner")
        joined = owner.join(table, and_(table.c.res_type == owner.c.res_type, table.c.res_id == owner.c.res_id))
        return (
            select()
            .select_from(joined)
            .where(owner.c.res_type == resource_type, self.patients(owner.c.patient_id), rows)
        )

    def _rows(self, table: Any, resource_type: str, param: str | Sequence[str]) -> ColumnElement[bool]:
        names = [param] if isinstance(param, str) else list(param)
        return or_(*(param_rows(table, resource_type, name) for name in names))

    def _codes(self, table: Any, refs: Sequence[c.CodeRef]) -> list[ColumnElement[bool]]:
        """The alternatives of a row's coding matching one of `refs`: exact codes grouped per system, prefixes,
        ICD-10 blocks, each one range of the code index."""
        exact: dict[str, list[str]] = {}
        parts: list[ColumnElement[bool]] = []
        for code_ref in refs:
            if code_ref.prefix:
                parts.append(and_(table.c.system == code_ref.system, self.sql.prefix(table.c.code, code_ref.code[:-1])))
            elif (block := code_ref.block) is not None:
                parts.append(
                    and_(table.c.system == code_ref.system, self.sql.first_three_between(table.c.code, *block))
                )
            else:
                exact.setdefault(code_ref.system, []).append(code_ref.code)
        for system, codes in exact.items():
            parts.insert(0, and_(table.c.system == system, table.c.code.in_(codes)))
        return parts

    def _pregnancy_code(self, token: Any, lactation: bool) -> list[ColumnElement[bool]]:
        """`reference.is_pregnancy_code` on a fact row, as alternatives (SNOMED, ICD-10)."""
        prefixes = ["O", "Z33", "Z34"] + (["Z39.1"] if lactation else [])
        icd10 = and_(
            token.c.system.in_(list(rules.ICD10_SYSTEMS)), or_(*(self.sql.prefix(token.c.code, p) for p in prefixes))
        )
        if not lactation:
            icd10 = and_(icd10, ~self.sql.prefix(token.c.code, "O92"))
        return [and_(token.c.system == rules.SNOMED, token.c.code == rules.PREGNANCY_SNOMED), icd10]

    @staticmethod
    def _missing(node: Any) -> bool | None:
        return False if node.missing == "absent" else None

    def _start(self, window: c.Window) -> ColumnElement[Any]:
        return self.sql.instant(minus_window(self.as_of, window))

    # ------------------------------------------------------------------------------------------ shared sources

    def _facts(
        self,
        resource_type: str,
        uses: Sequence[tuple[int, Matcher, Matcher | None]],
        name: str,
        columns: Sequence[str] = (),
    ) -> CTE:
        """(leaf, patient_id, status, lo, hi, *columns) of the fact rows of every leaf reading the type (`leaf`:
        its number): rows whose coding matches the leaf's codes, of resources with no coding matching its
        exceptions; one range scan of the code index per alternative of a leaf's codes (a UNION ALL, not an OR:
        PostgreSQL answers an OR of ranges with bitmap scans that visit the table, a range alone from the
        covering index). A resource coded twice for a leaf (local and standard coding, or codes in two of its
        alternatives) gives two rows with the same values: every score below is a maximum or keeps one row, so
        that is harmless."""
        selected = ("patient_id", "status", "lo", "hi", *columns)
        selects: list[Select[Any]] = []
        for leaf, match, excluded in uses:
            fact = clinical_fact.alias("fact")
            returned = [fact.c[column] for column in selected] + ([fact.c.res_id] if excluded is not None else [])
            candidates = [
                select(literal(leaf).label("leaf"), *returned).where(
                    fact.c.res_type == resource_type, self.patients(fact.c.patient_id), alternative
                )
                for alternative in match(fact)
            ]
            if excluded is None:
                selects += candidates
                continue
            exception = clinical_fact.alias("exception")
            exceptions = [
                select(exception.c.res_id).where(
                    exception.c.res_type == resource_type, self.patients(exception.c.patient_id), alternative
                )
                for alternative in excluded(exception)
            ]
            coded = (union_all(*candidates) if len(candidates) > 1 else candidates[0]).subquery(f"leaf{leaf}")
            selects.append(
                select(coded.c.leaf, *(coded.c[column] for column in selected)).where(
                    coded.c.res_id.not_in(union_all(*exceptions) if len(exceptions) > 1 else exceptions[0])
                )
            )
        return (union_all(*selects) if len(selects) > 1 else selects[0]).cte(name)

    @staticmethod
    def _none_of(status: Any, codes: Iterable[str]) -> ColumnElement[bool]:
        """The fact's status is not one of `codes` (none recorded counts too: SQL's NOT IN would drop it)."""
        return or_(status.is_(None), status.not_in(sorted(codes)))

    def _observation_values(self, uses: Sequence[tuple[int, Matcher]], name: str) -> CTE:
        """The candidates of observation leaves (`leaf`: its number; a pregnancy's hCG: -1 - its number):
        Observations with a status that counts, not future-dated, with their date span (lo: first instant, hi:
        last), value-quantity (q_value, q_system, q_code, and canonical: q_canonical_value, q_canonical_code)
        and positivity (1 positive, 0 negative, NULL not readable). Threshold leaves and positive-mode leaves
        (with the hCG readings) get one CTE each: one shared CTE would be materialised, wide rows and all."""
        coded = self._facts(
            "Observation",
            [(leaf, match, None) for leaf, match in uses],
            f"{name}_facts",
            ("value", "unit_system", "unit_code", "canonical_value", "canonical_code", "positive"),
        )
        return (
            select(
                *(coded.c[column] for column in ("leaf", "patient_id", "lo", "hi", "positive")),
                coded.c.value.label("q_value"),
                coded.c.unit_system.label("q_system"),
                coded.c.unit_code.label("q_code"),
                coded.c.canonical_value.label("q_canonical_value"),
                coded.c.canonical_code.label("q_canonical_code"),
            )
            .where(
                # counts: no status outside the counting ones of its required value set
                self._none_of(coded.c.status, _complement("Observation", rules.OBSERVATION_STATUSES)),
                or_(coded.c.lo.is_(None), coded.c.lo < self.next_day),
            )
            .cte(name)
        )

    def _conditions(
        self,
        uses: Sequence[tuple[int, Matcher, Matcher | None]],
    ) -> CTE:
        """The candidates of every condition leaf (`leaf`: its number; a pregnancy's: -1 - its number): Conditions
        not refuted or entered-in-error, not future-dated, with their date span (onset-date, else recorded-date)
        and clinical status (has_clinical: any coded clinicalStatus; active: one of active/recurrence/relapse)."""
        coded = self._facts("Condition", uses, "condition_facts", ("clinical_status",))
        clinical = coded.c.clinical_status
        return (
            select(
                coded.c.leaf,
                coded.c.patient_id,
                coded.c.lo,
                coded.c.hi,
                case((clinical.is_not(None), 1), else_=0).label("has_clinical"),
                case((clinical.in_(sorted(rules.ACTIVE_CLINICAL)), 1), else_=0).label("active"),
            )
            .where(
                self._none_of(coded.c.status, rules.VOID_VERIFICATION),
                or_(coded.c.lo.is_(None), coded.c.lo < self.next_day),
            )
            .cte("conditions")
        )

    def _medications(self, uses: Sequence[tuple[int, Sequence[c.CodeRef]]]) -> CTE:
        """The uses of every medication leaf's codes (MedicationStatement, MedicationRequest,
        MedicationAdministration) with a status that counts: leaf, patient_id, lo (start instant, NULL: none),
        hi (end instant, NULL: no end), ongoing (1: its status makes an open end ongoing)."""
        kinds = (
            ("MedicationStatement", None, rules.STATEMENT_NOT_TAKEN, rules.STATEMENT_ONGOING),
            ("MedicationRequest", rules.REQUEST_STATUSES, None, rules.REQUEST_ONGOING),
            ("MedicationAdministration", rules.ADMINISTRATION_STATUSES, None, rules.ADMINISTRATION_ONGOING),
        )
        selects = []
        for resource_type, counting, excluded, ongoing in kinds:
            short = resource_type.removeprefix("Medication").lower()
            coded = self._facts(
                resource_type, [(leaf, self._matcher(codes), None) for leaf, codes in uses], f"{short}_facts"
            )
            status = coded.c.status
            counts: ColumnElement[bool]
            if counting is not None:
                counts = status.in_(sorted(counting))
            else:
                assert excluded is not None
                counts = self._none_of(status, excluded)
            selects.append(
                select(
                    coded.c.leaf,
                    coded.c.patient_id,
                    coded.c.lo,
                    coded.c.hi,
                    case((status.in_(sorted(ongoing)), 1), else_=0).label("ongoing"),
                ).where(counts)
            )
        return union_all(*selects).cte("medications")

    # ------------------------------------------------------------------------------------------ second pass

    def build(self) -> list[tuple[Select[Any], tuple[int, ...]]]:
        """Selects of (leaf, patient_id, score): every leaf's score for the patients with candidates; one
        scoring pass per resource type for all its leaves. Sets `missing`: each leaf's truth without rows."""
        by_kind: dict[str, list[_Spec]] = {}
        for spec in self.specs:
            by_kind.setdefault(spec.kind, []).append(spec)
        self.missing = [None if spec.kind in ("age", "sex") else self._missing(spec.node) for spec in self.specs]
        observations = by_kind.get("observation", [])
        thresholds = [spec for spec in observations if spec.node.positive is None]
        positives = [spec for spec in observations if spec.node.positive is not None]
        pregnancies = by_kind.get("pregnancy", [])
        conditions = by_kind.get("condition", [])
        medications = by_kind.get("medication", [])
        sources: list[tuple[Select[Any], tuple[int, ...]]] = []
        if thresholds:
            rows = self._observation_values(
                [(spec.number, self._matcher(spec.node.codes)) for spec in thresholds], "observations"
            )
            judged = {spec.number: self._threshold(spec.node, rows) for spec in thresholds}
            sources.append((self._observation_scores(thresholds, rows, judged, "threshold"), _numbers(thresholds)))
        readings = None
        if positives or pregnancies:
            reading_uses = [(spec.number, self._matcher(spec.node.codes)) for spec in positives]
            reading_uses += [(-1 - spec.number, self._hcg_code) for spec in pregnancies]
            readings = self._observation_values(reading_uses, "readings")
            if positives:
                judged = {}
                for spec in positives:
                    wanted = 1 if spec.node.positive else 0
                    meets = case(
                        (readings.c.positive == wanted, 1), (readings.c.positive.is_not(None), 0), else_=null()
                    )
                    judged[spec.number] = (meets, readings.c.positive)
                sources.append((self._observation_scores(positives, readings, judged, "positive"), _numbers(positives)))
        condition_source = None
        if conditions or pregnancies:
            condition_uses: list[tuple[int, Matcher, Matcher | None]] = [
                (
                    spec.number,
                    self._matcher(spec.node.codes),
                    self._matcher(spec.node.exceptions) if spec.node.exceptions else None,
                )
                for spec in conditions
            ]
            condition_uses += [
                (-1 - spec.number, self._pregnancy_matcher(spec.node.include_lactation), None) for spec in pregnancies
            ]
            condition_source = self._conditions(condition_uses)
            if conditions:
                sources.append((self._condition_scores(conditions, condition_source), _numbers(conditions)))
        if pregnancies:
            assert readings is not None and condition_source is not None
            sources.append((self._pregnancy_scores(pregnancies, condition_source, readings), _numbers(pregnancies)))
        if medications:
            uses_source = self._medications([(spec.number, spec.node.codes) for spec in medications])
            sources.append((self._medication_scores(medications, uses_source), _numbers(medications)))
        sources += [(self._age(spec), (spec.number,)) for spec in by_kind.get("age", [])]
        sources += [(self._sex(spec), (spec.number,)) for spec in by_kind.get("sex", [])]
        sources += [(self._other_study(spec), (spec.number,)) for spec in by_kind.get("other_study", [])]
        return sources

    def _threshold(self, node: c.Observation, rows: Any) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
        """(meets 1/0, rank) of a candidate's value-quantity in the node's unit or an alternative (NULL: unusable)."""
        assert node.comparator is not None and node.value is not None and node.unit is not None
        targets = [(node.value, node.unit, 1.0)] + [
            (alternative.value, alternative.unit, node.value / alternative.value if alternative.value else 1.0)
            for alternative in node.alternatives
        ]
        meets: list[tuple[ColumnElement[bool], ColumnElement[Any]]] = []
        ranks: list[tuple[ColumnElement[bool], ColumnElement[Any]]] = []
        seen: set[str] = set()
        for threshold, unit, rank_scale in targets:
            found = conversion(unit)
            if found is None or found.canonical_code in seen:
                continue  # not convertible, or an earlier target already takes this canonical unit
            seen.add(found.canonical_code)
            here = rows.c.q_canonical_code == found.canonical_code
            there = _float(threshold * found.scale + found.offset)
            meets.append((here, case((_compare(rows.c.q_canonical_value, node.comparator, there), 1), else_=0)))
            # same-day values rank in the node's unit, an alternative's scaled by value / alternative value
            in_unit = (rows.c.q_canonical_value - _float(found.offset)) / _float(found.scale)
            ranks.append((here, in_unit * _float(rank_scale)))
        if not meets:
            return null(), null()
        return case(*meets, else_=null()), case(*ranks, else_=null())

    def _matcher(self, refs: Sequence[c.CodeRef]) -> Matcher:
        def match(token: Any) -> list[ColumnElement[bool]]:
            return self._codes(token, refs)

        return match

    def _pregnancy_matcher(self, lactation: bool) -> Matcher:
        def match(token: Any) -> list[ColumnElement[bool]]:
            return self._pregnancy_code(token, lactation)

        return match

    @staticmethod
    def _hcg_code(token: Any) -> list[ColumnElement[bool]]:
        return [and_(token.c.system == rules.LOINC, token.c.code.in_(sorted(rules.HCG_CODES)))]

    @staticmethod
    def _by_leaf(leaf: Any, values: dict[int, Any], else_: Any = None) -> ColumnElement[Any]:
        """CASE leaf WHEN n THEN values[n] ... END: one expression over rows of several leaves."""
        if len(values) == 1:
            return next(iter(values.values()))
        return case(*((leaf == number, value) for number, value in values.items()), else_=else_)

    # ------------------------------------------------------------------------------------------ leaves

    def _observation_scores(
        self,
        specs: Sequence[_Spec],
        rows: CTE,
        judged: dict[int, tuple[ColumnElement[Any], ColumnElement[Any]]],
        name: str,
    ) -> Select[Any]:
        """Observation leaves over their candidate rows, in one pass: `latest` keeps each patient's first row
        by (usable, day, rank) descending; `any` / `all` take the maximum of a per-row score."""
        keep: dict[int, Any] = {}
        usable: dict[int, Any] = {}
        for spec in specs:
            node: c.Observation = spec.node
            meets = judged[spec.number][0]
            conditions: list[ColumnElement[bool]] = [rows.c.lo.is_not(None), meets.is_not(None)]
            if node.lookback is not None:
                start = self._start(node.lookback)
                # wholly before the window: not a candidate; partly in it: a candidate, not usable
                keep[spec.number] = case((or_(rows.c.lo.is_(None), rows.c.hi >= start), 1), else_=0)
                conditions.append(rows.c.lo >= start)
            else:
                keep[spec.number] = literal(1)
            usable[spec.number] = case((and_(*conditions), 1), else_=0)
        leaf = rows.c.leaf
        is_usable = self._by_leaf(leaf, usable, 0)
        meets = self._by_leaf(leaf, {number: judged[number][0] for number in judged})
        rank = self._by_leaf(leaf, {number: judged[number][1] for number in judged})
        whole = {spec.number: spec.node.which for spec in specs}
        # per-row scores: latest 2/0 (meets or not) or 1 (unusable); any 3/2/1 and all 3/2/1 for a maximum
        latest_score = case((is_usable == 1, case((meets == 1, TRUE), else_=FALSE)), else_=UNKNOWN)
        spread = (
            self._by_leaf(
                leaf,
                {
                    number: case(
                        (
                            is_usable == 1,
                            case((meets == 1, 3 if which == "any" else 2), else_=2 if which == "any" else 3),
                        ),
                        else_=1,
                    )
                    for number, which in whole.items()
                    if which != "latest"
                },
                1,
            )
            if any(which != "latest" for which in whole.values())
            else literal(1)
        )
        partition = (leaf, rows.c.patient_id)
        scored = (
            select(
                leaf.label("leaf"),
                rows.c.patient_id,
                latest_score.label("latest"),
                func.max(spread).over(partition_by=partition).label("spread"),
                func.row_number()
                .over(partition_by=partition, order_by=(is_usable.desc(), self.sql.day(rows.c.lo).desc(), rank.desc()))
                .label("place"),
            )
            .where(rows.c.leaf.in_(sorted(whole)), self._by_leaf(leaf, keep, 0) == 1)
            .cte(f"{name}_scored")
        )
        decoded = {
            number: (
                scored.c.latest
                if which == "latest"
                else case(
                    (scored.c.spread == 3, TRUE if which == "any" else FALSE),
                    (scored.c.spread == 2, FALSE if which == "any" else TRUE),
                    else_=UNKNOWN,
                )
            )
            for number, which in whole.items()
        }
        return select(scored.c.leaf, scored.c.patient_id, self._by_leaf(scored.c.leaf, decoded).label("score")).where(
            scored.c.place == 1
        )

    def _condition_scores(self, specs: Sequence[_Spec], source: CTE) -> Select[Any]:
        scores: dict[int, Any] = {}
        for spec in specs:
            node: c.Condition = spec.node
            whens: list[tuple[ColumnElement[bool], int]] = []
            if node.active_only:
                whens.append((and_(source.c.has_clinical == 1, source.c.active == 0), FALSE))
            if node.within is not None:
                start = self._start(node.within)
                whens += [(source.c.lo.is_(None), UNKNOWN), (source.c.lo >= start, TRUE), (source.c.hi < start, FALSE)]
                scores[spec.number] = case(*whens, else_=UNKNOWN)
            else:
                scores[spec.number] = case(*whens, else_=TRUE) if whens else literal(TRUE)
        return (
            select(source.c.leaf, source.c.patient_id, func.max(self._by_leaf(source.c.leaf, scores)).label("score"))
            .where(source.c.leaf.in_(sorted(scores)))
            .group_by(source.c.leaf, source.c.patient_id)
        )

    def _pregnancy_scores(self, specs: Sequence[_Spec], conditions: CTE, readings: CTE) -> Select[Any]:
        """A pregnancy (or lactation) Condition active or dated in the window, or a positive hCG in it: true."""
        condition_in: dict[int, Any] = {}
        hcg_in: dict[int, Any] = {}
        for spec in specs:
            start = self._start(spec.node.within)
            condition_in[-1 - spec.number] = or_(conditions.c.active == 1, conditions.c.lo >= start)
            hcg_in[-1 - spec.number] = readings.c.lo >= start
        leaves = sorted(condition_in)
        found = union_all(
            select(conditions.c.leaf, conditions.c.patient_id).where(
                conditions.c.leaf.in_(leaves), self._by_leaf(conditions.c.leaf, condition_in, false())
            ),
            select(readings.c.leaf, readings.c.patient_id).where(
                readings.c.leaf.in_(leaves), readings.c.positive == 1, self._by_leaf(readings.c.leaf, hcg_in, false())
            ),
        ).cte("pregnancies")
        return select((-1 - found.c.leaf).label("leaf"), found.c.patient_id, literal(TRUE).label("score")).group_by(
            found.c.leaf, found.c.patient_id
        )

    def _medication_scores(self, specs: Sequence[_Spec], uses: CTE) -> Select[Any]:
        sql = self.sql
        as_of = sql.date_value(self.as_of)
        start_day = sql.day(uses.c.lo)
        end_day = case((uses.c.hi.is_not(None), sql.day(uses.c.hi)), (uses.c.ongoing == 1, null()), else_=start_day)
        scores: dict[int, Any] = {}
        for spec in specs:
            node: c.Medication = spec.node
            if node.ever:
                in_time: ColumnElement[bool] = true()
            elif node.within is not None:
                in_time = or_(end_day.is_(None), end_day >= sql.date_value(minus_window(self.as_of, node.within)))
            else:
                in_time = or_(end_day.is_(None), end_day >= as_of)
            long_enough: ColumnElement[bool] = true()
            if node.min_duration is not None:
                until = case((or_(end_day.is_(None), end_day > as_of), as_of), else_=end_day)  # min(end, D)
                duration = node.min_duration
                if duration.days is not None:
                    long_enough = sql.plus_days(start_day, duration.days) <= sql.comparable_day(until)
                else:  # start <= minus_months(until, m): an earlier month, or the same month and not a later day
                    months = duration.months if duration.months is not None else 12 * (duration.years or 0)
                    start_month, start_dom = sql.parts(start_day)
                    until_month, until_dom = sql.parts(until)
                    long_enough = or_(
                        start_month + months < until_month,
                        and_(start_month + months == until_month, start_dom <= until_dom),
                    )
            scores[spec.number] = case((and_(in_time, long_enough), TRUE), else_=FALSE)
        # A use without a start makes it unknown; without a qualifying use the result is `missing`, whatever
        # non-qualifying uses exist: only qualifying (true) and undated (unknown) uses give rows.
        score = case((uses.c.lo.is_(None), UNKNOWN), else_=self._by_leaf(uses.c.leaf, scores))
        scored = (
            select(uses.c.leaf, uses.c.patient_id, score.label("score"))
            .where(uses.c.leaf.in_(sorted(scores)), or_(uses.c.lo.is_(None), uses.c.lo < self.next_day))
            .cte("medication_scored")
        )
        return (
            select(scored.c.leaf, scored.c.patient_id, func.max(scored.c.score).label("score"))
            .where(scored.c.score > FALSE)
            .group_by(scored.c.leaf, scored.c.patient_id)
        )

    def _age(self, spec: _Spec) -> Select[Any]:
        node: c.Age = spec.node
        birth = idx_date.alias("birth")
        low = node.min
        highs = [bound for bound in (node.max, node.below - 1 if node.below is not None else None) if bound is not None]
        high = min(highs) if highs else None
        # youngest: the age on the last day the birthDate allows; oldest: on its first day
        youngest_at_least_low: ColumnElement[bool] = true()
        oldest_below_low: ColumnElement[bool] = false()
        if low is not None:
            cutoff = age_cutoff(self.as_of, low)
            if cutoff is None:
                youngest_at_least_low, oldest_below_low = false(), true()
            else:
                boundary = self.sql.instant(cutoff + timedelta(days=1))
                youngest_at_least_low = birth.c.high < boundary
                oldest_below_low = birth.c.low >= boundary
        oldest_at_most_high: ColumnElement[bool] = true()
        youngest_above_high: ColumnElement[bool] = false()
        if high is not None:
            cutoff = age_cutoff(self.as_of, high + 1)
            if cutoff is not None:
                boundary = self.sql.instant(cutoff + timedelta(days=1))
                oldest_at_most_high = birth.c.low >= boundary
                youngest_above_high = birth.c.high < boundary
        impossible = true() if low is not None and high is not None and low > high else false()
        score = case(
            (or_(oldest_below_low, youngest_above_high, impossible), FALSE),
            (and_(youngest_at_least_low, oldest_at_most_high), TRUE),
            else_=UNKNOWN,
        )
        return self.scoped(birth, "Patient", "birthdate").add_columns(
            # a Patient's own id is its patient id: the lookup index ends with res_id (an index-only scan)
            literal(spec.number).label("leaf"),
            birth.c.res_id.label("patient_id"),
            score.label("score"),
        )

    def _sex(self, spec: _Spec) -> Select[Any]:
        gender = idx_token.alias("gender")
        score = case((gender.c.code.in_(list(spec.node.administrative)), TRUE), else_=FALSE)
        return self.scoped(gender, "Patient", "gender").add_columns(
            literal(spec.number).label("leaf"), gender.c.res_id.label("patient_id"), score.label("score")
        )

    def _other_study(self, spec: _Spec) -> Select[Any]:
        node: c.OtherStudy = spec.node
        start = self._start(node.within)
        status = idx_token.alias("rstatus")
        study = idx_reference.alias("rstudy")
        period = idx_date.alias("rperiod")
        this_study = status.c.res_id.in_(
            self.scoped(study, "ResearchSubject", "study")
            .where(study.c.target_type == self.study_type, study.c.target_id == self.study_id)
            .add_columns(study.c.res_id)
        )
        taking_part = (
            self.scoped(status, "ResearchSubject", "status")
            .where(status.c.code.in_(sorted(rules.PARTICIPATING)), ~this_study)
            .add_columns(
                status.c.res_id,
                status.c.patient_id,
                case((status.c.code.in_(sorted(rules.ONGOING_PARTICIPATION)), 1), else_=0).label("ongoing"),
            )
            .cte(f"leaf{spec.number}_statuses")
        )
        subjects = (
            select(taking_part.c.patient_id, taking_part.c.ongoing, period.c.low.label("lo"), period.c.high.label("hi"))
            .select_from(
                taking_part.outerjoin(
                    period, and_(self._rows(period, "ResearchSubject", "date"), period.c.res_id == taking_part.c.res_id)
                )
            )
            .where(or_(period.c.low.is_(None), period.c.low < self.next_day))
            .cte(f"leaf{spec.number}_subjects")
        )
        # an end says when it stopped; no end: ongoing, except off-study, which counts only if it started in
        # the window (unknown if it started before: it ended at some unknown point after)
        overlaps = case(
            (subjects.c.hi.is_not(None), case((subjects.c.hi >= start, TRUE), else_=FALSE)),
            (subjects.c.ongoing == 1, TRUE),
            (subjects.c.lo >= start, TRUE),
            else_=UNKNOWN,
        )
        return (
            select(literal(spec.number).label("leaf"), subjects.c.patient_id, func.max(overlaps).label("score"))
            .group_by(subjects.c.patient_id)
            .having(func.max(overlaps) > FALSE)
        )


def kleene_score(tree: Any, leaves: Sequence[ColumnElement[Any]], dialect: str) -> ColumnElement[Any]:
    """A tree's truth as a score over the leaves' scores (2 true, 1 unknown, 0 false): on Kleene's order
    false < unknown < true, all_of is the minimum, any_of the maximum, not is 2 - x, and at_least is true
    with n trues, false when fewer than n are true or unknown. Each leaf's score is read once per criterion
    (a boolean form needed each leaf twice: `CASE WHEN x THEN pass WHEN NOT x THEN fail`)."""
    kind = tree[0]
    if kind == "leaf":
        leaf: ColumnElement[Any] = leaves[tree[1]]
        return leaf
    if kind in ("all_of", "any_of"):
        children = [kleene_score(child, leaves, dialect) for child in tree[1]]
        if not children:
            return literal(TRUE if kind == "all_of" else FALSE)
        if len(children) == 1:
            return children[0]
        # LEAST / GREATEST on PostgreSQL; SQLite's min / max with several arguments are the scalar ones
        postgresql = dialect == "postgresql"
        pick = (
            (func.least if postgresql else func.min)
            if kind == "all_of"
            else (func.greatest if postgresql else func.max)
        )
        return pick(*children)
    if kind == "not":
        return literal(TRUE) - kleene_score(tree[1], leaves, dialect)
    n, children = tree[1], [kleene_score(child, leaves, dialect) for child in tree[2]]
    trues = sum((case((child == TRUE, 1), else_=0) for child in children), literal(0))
    possible = sum((case((child >= UNKNOWN, 1), else_=0) for child in children), literal(0))
    return case((trues >= n, TRUE), (possible < n, FALSE), else_=UNKNOWN)


@dataclass(frozen=True, slots=True)
class CompiledScreening:
    """The statement and how to read its rows: counts, then (patient id, status, outcome per computable criterion)."""

    statement: Select[Any]
    computable: tuple[str, ...]  # criterion ids with an outcome column, in column order
    manual: tuple[str, ...]
    parameters: dict[str, Any]


def compile_screening(
    criteria: c.Eligibility | Sequence[c.Criterion],
    as_of: date,
    study_reference: str,
    dialect: str,
    *,
    patient_ids: Sequence[str] | None = None,
    in_range: bool = False,
    status: str | None = None,
    after: str | None = None,
    limit: int | None = None,
) -> CompiledScreening:
    """One statement: per patient (of the population, or `patient_ids`) every computable criterion's outcome
    and the status; returns the counts per status over that population and the page of rows (ordered by
    patient id, after `after`, with `status` when given, at most `limit`)."""
    listed = list(criteria.criteria if isinstance(criteria, c.Eligibility) else criteria)
    compiler = ScreeningCompiler(
        dialect, as_of, study_reference, restrict_patients=patient_ids is not None, in_range=in_range
    )
    trees = {criterion.id: compiler.expression(criterion.expression) for criterion in listed if criterion.expression}
    computable = tuple(trees)
    manual = tuple(criterion.id for criterion in listed if criterion.expression is None)
    types = {criterion.id: criterion.type for criterion in listed}

    patients = resource_table.alias("patient")
    population = select(patients.c.res_id.label("patient_id")).where(
        # `= false`, not `IS false`: an index condition, so the live-resource index answers alone
        patients.c.res_type == "Patient",
        patients.c.deleted == false(),
        compiler.patients(patients.c.res_id),
    )
    sources = compiler.build()
    if sources:
        count = len(compiler.specs)
        # Each source's scores pivoted to one row per patient (a column per leaf), the pivots joined to the
        # population: hash aggregates of one source's rows and hash joins of one row per patient, cheaper than
        # sorting every source's rows together to pivot them at once.
        population_cte = population.cte("population")
        joined: Any = population_cte
        leaf_columns: dict[int, Any] = {}
        for number, (source, leaves) in enumerate(sources):
            rows = source.subquery(f"source{number}")
            pivot = (
                select(
                    rows.c.patient_id,
                    *(
                        func.max(rows.c.score if len(leaves) == 1 else case((rows.c.leaf == k, rows.c.score))).label(
                            f"s{k}"
                        )
                        for k in leaves
                    ),
                )
                .group_by(rows.c.patient_id)
                .cte(f"pivot{number}")
            )
            joined = joined.outerjoin(pivot, pivot.c.patient_id == population_cte.c.patient_id)
            leaf_columns.update({k: pivot.c[f"s{k}"] for k in leaves})
        assert len(leaf_columns) == count, "every leaf has one source"
        # a leaf without rows for the patient: its `missing` default (absent: false; unknown otherwise)
        leaf_scores = [
            func.coalesce(leaf_columns[k], UNKNOWN if missing is None else (TRUE if missing else FALSE))
            for k, missing in enumerate(compiler.missing)
        ]
        outcome_columns: list[Any] = []
        for criterion_id, tree in trees.items():
            value = kleene_score(tree, leaf_scores, dialect)
            passing, failing = (PASS, FAIL) if types[criterion_id] == "inclusion" else (FAIL, PASS)
            outcome_columns.append(
                case({TRUE: passing, FALSE: failing}, value=value, else_=UNDECIDED).label(f"o{len(outcome_columns)}")
            )
        outcomes = select(population_cte.c.patient_id, *outcome_columns).select_from(joined).cte("outcomes")
    else:
        outcomes = population.cte("outcomes")
    columns = [outcomes.c[f"o{k}"] for k in range(len(computable))]
    status_column = case(
        (or_(false(), *(column == FAIL for column in columns)), "ineligible"),
        (or_(false(), *(column == UNDECIDED for column in columns)), "incomplete"),
        else_="eligible",
    )
    screened = select(outcomes.c.patient_id, status_column.label("status"), *columns).cte("screened")
    counts = select(
        *(
            func.coalesce(func.sum(case((screened.c.status == name, 1), else_=0)), 0).label(f"n_{name}")
            for name in STATUSES
        )
    ).subquery("counts")
    page = select(screened)
    if status is not None:
        page = page.where(screened.c.status == status)
    if after is not None:
        page = page.where(screened.c.patient_id > after)
    page = page.order_by(screened.c.patient_id)
    if limit is not None:
        page = page.limit(limit)
    page_subquery = page.subquery("page")
    statement = (
        select(counts, page_subquery)
        .select_from(counts.outerjoin(page_subquery, true()))
        .order_by(page_subquery.c.patient_id)
    )
    parameters = {PATIENT_IDS: list(patient_ids)} if patient_ids is not None else {}
    return CompiledScreening(statement, computable, manual, parameters)


def screen(
    conn_or_engine: Connection | Engine,
    criteria: c.Eligibility | Sequence[c.Criterion],
    as_of: date,
    study_reference: str,
    *,
    patient_ids: Sequence[str] | None = None,
    status: Status | str | None = None,
    after: str | None = None,
    limit: int | None = None,
    parallel: int | None = None,
    shard_patients: int = SHARD_PATIENTS,
    min_shard_patients: int = MIN_SHARD_PATIENTS,
) -> Screening:
    """Every stored Patient (or those of `patient_ids`) against the criteria on `as_of`, for `study_reference`
    (`ResearchStudy/depil-2`: taking part in it is not 'another study'): the counts per status over that
    population, and the page of patients after the id `after`, with `status` when given, at most `limit` of
    them, ordered by patient id. One statement, or on PostgreSQL given an engine and the whole population, one
    per shard of at most `shard_patients` patients, `parallel` at a time (default: one per core), all reading
    one snapshot."""
    if status is not None and status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    if limit is not None and limit < 0:
        raise ValueError("limit must not be negative")
    listed = list(criteria.criteria if isinstance(criteria, c.Eligibility) else criteria)
    if patient_ids is not None and not patient_ids:
        return Screening(dict.fromkeys(STATUSES, 0), [])
    if isinstance(conn_or_engine, Engine):
        engine = conn_or_engine
        if engine.dialect.name == "postgresql" and patient_ids is None:
            return _screen_shards(
                engine,
                listed,
                as_of,
                study_reference,
                parallel=min(parallel or default_parallel(), MAX_PARALLEL),
                shard_patients=shard_patients,
                min_shard_patients=min_shard_patients,
                status=status,
                after=after,
                limit=limit,
            )
        with engine.connect() as conn:
            return screen(
                conn, listed, as_of, study_reference, patient_ids=patient_ids, status=status, after=after, limit=limit
            )
    return _screen_on(
        conn_or_engine, listed, as_of, study_reference, patient_ids=patient_ids, status=status, after=after, limit=limit
    )


def _screen_on(
    conn: Connection,
    listed: Sequence[c.Criterion],
    as_of: date,
    study_reference: str,
    *,
    patient_ids: Sequence[str] | None = None,
    status: str | None = None,
    after: str | None = None,
    limit: int | None = None,
) -> Screening:
    compiled = compile_screening(
        listed,
        as_of,
        study_reference,
        conn.dialect.name,
        patient_ids=patient_ids,
        status=status,
        after=after,
        limit=limit,
    )
    return _run(conn, compiled, listed)


def _run(
    conn: Connection, compiled: CompiledScreening, listed: Sequence[c.Criterion], bound: dict[str, Any] | None = None
) -> Screening:
    rows = conn.execute(compiled.statement, {**compiled.parameters, **(bound or {})}).mappings().all()
    return read_screening(rows, compiled.computable, listed)


def default_parallel() -> int:
    """Shards run side by side by default: one per core this process may use (the database is on the same
    machine in the default deployment; `TRIALBRIDGE_SCREENING_PARALLEL` says otherwise)."""
    return usable_cores()


def shard_count(
    patients: int, parallel: int, shard_patients: int = SHARD_PATIENTS, min_shard_patients: int = MIN_SHARD_PATIENTS
) -> int:
    """Shards for `patients`: at most `shard_patients` each, a multiple of `parallel` so that the last round
    keeps every connection busy, but none smaller than `min_shard_patients` (one shard: one statement)."""
    most = patients // max(1, min_shard_patients)
    if most <= 1 or (parallel <= 1 and patients <= shard_patients):
        return 1
    needed = max(parallel, -(-patients // shard_patients))
    return min(most, -(-needed // parallel) * parallel)


def shard_ranges(conn: Connection, shards: int) -> list[PatientRange]:
    """The live Patients' ids in `shards` ranges of (nearly) equal size, in id order (fewer when ids run out;
    none without patients). One scan of the live-resource index."""
    patients = resource_table.alias("patient")
    tiles = (
        select(patients.c.res_id, func.ntile(shards).over(order_by=patients.c.res_id).label("tile"))
        .where(patients.c.res_type == "Patient", patients.c.deleted == false())
        .subquery("tiles")
    )
    first, last = func.min(tiles.c.res_id), func.max(tiles.c.res_id)
    rows = conn.execute(select(first, last).group_by(tiles.c.tile).order_by(first))
    return [PatientRange(low, high) for low, high in rows]


def _live_patients(conn: Connection) -> int:
    patients = resource_table.alias("patient")
    query = select(func.count()).where(patients.c.res_type == "Patient", patients.c.deleted == false())
    return int(conn.execute(query).scalar_one())


@contextmanager
def population_snapshot(engine: Engine) -> Iterator[tuple[Connection, str]]:
    """A REPEATABLE READ transaction on PostgreSQL and the id of the snapshot it exports, which other
    connections adopt with `adopt_snapshot` while this context is open."""
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        snapshot = str(conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one())
        yield conn, snapshot


def adopt_snapshot(conn: Connection, snapshot: str) -> None:
    """Make `conn`'s transaction (REPEATABLE READ, nothing run in it yet) read `snapshot`."""
    if not _SNAPSHOT_ID.fullmatch(snapshot):  # a utility statement: no bound parameters, so checked here
        raise ValueError(f"not a PostgreSQL snapshot id: {snapshot!r}")
    conn.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot}'")


def _screen_shards(
    engine: Engine,
    listed: Sequence[c.Criterion],
    as_of: date,
    study_reference: str,
    *,
    parallel: int,
    shard_patients: int,
    min_shard_patients: int,
    status: str | None,
    after: str | None,
    limit: int | None,
) -> Screening:
    # Sizing only (the ranges are cut in the snapshot): a population too small for shards is one statement,
    # without a snapshot to export or a turn to wait for.
    with engine.connect() as conn:
        shards = shard_count(_live_patients(conn), parallel, shard_patients, min_shard_patients)
        if shards == 1:
            for setting in POPULATION_SETTINGS:  # transaction-local: gone when the transaction ends
                conn.exec_driver_sql(setting)
            return _screen_on(conn, listed, as_of, study_reference, status=status, after=after, limit=limit)
    with SHARDED_SCREENINGS, population_snapshot(engine) as (coordinator, snapshot):
        for setting in COORDINATOR_SETTINGS:
            coordinator.exec_driver_sql(setting)
        ranges = shard_ranges(coordinator, shards)
        # one statement for every shard (built and compiled once: ~0.2 s of Python), its range bound per shard
        compiled = compile_screening(
            listed, as_of, study_reference, "postgresql", in_range=True, status=status, after=after, limit=limit
        )

        def run_shard(patient_range: PatientRange) -> Screening:
            with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
                adopt_snapshot(conn, snapshot)
                for setting in (*POPULATION_SETTINGS, *(SHARD_SETTINGS if parallel > 1 else ())):
                    conn.exec_driver_sql(setting)
                return _run(conn, compiled, listed, patient_range.parameters())

        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="screening") as pool:
            parts = list(pool.map(run_shard, ranges))
    counts = {name: sum(part.counts[name] for part in parts) for name in STATUSES}
    rows = [row for part in parts for row in part.rows]  # each shard's page, in id order
    return Screening(counts, rows if limit is None else rows[:limit])


__all__ = [
    "SHARD_PATIENTS",
    "CompiledScreening",
    "PatientRange",
    "Screening",
    "ScreeningCompiler",
    "adopt_snapshot",
    "age_cutoff",
    "compile_screening",
    "default_parallel",
    "kleene_score",
    "population_snapshot",
    "screen",
    "shard_count",
    "shard_ranges",
]
