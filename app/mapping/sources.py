"""CSV source specs (mappings/sources/*.yaml): strict models of a source file kind, and their loader.

A spec names the file's columns (type, whether a cell may be empty, allowed values and ranges), the
transforms applied to cells and the code tables they use, the deterministic key columns, the builder
that turns a row into FHIR resources and the resource types it writes. mappings/README.md documents
every field. Loading checks everything that can be checked before a file arrives (unknown transforms,
tables of the wrong shape, units UCUM cannot convert, key columns that do not exist, a builder's
columns missing), and reports each problem with the file and line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, TypeAdapter, ValidationError, field_validator, model_validator

from app.eligibility.criteria import Code, Strict, parse_code
from app.mapping.transforms import TRANSFORMS
from app.mapping.yaml_source import SpecError, load_model, load_yaml

KIND = r"^[a-z][a-z0-9_]{0,40}$"
ColumnType = Literal[
    "string",
    "integer",
    "decimal",
    "date",
    "datetime",
    "code",
    "ucum",
    "study",
    "subject",
    "visit",
    "arm",
    "intervention",
    "strata",
]
Builder = Literal["lab_observation", "scale_observations", "enrolment", "adverse_event", "medication_administration"]

# What each builder reads: column -> (type, transform or None). The builders in app/mapping/imports.py rely on
# these shapes; a spec that gives a builder anything else is refused when it loads.
BUILDER_COLUMNS: dict[str, dict[str, tuple[str, str | None]]] = {
    "lab_observation": {
        "study": ("study", None),
        "subject": ("subject", None),
        "collected_at": ("datetime", None),
        "test": ("code", "lab_test"),
        "value": ("string", "lab_result"),
        "unit": ("string", None),
        "ref_low": ("decimal", None),
        "ref_high": ("decimal", None),
        "interpretation": ("code", "coding"),
    },
    "scale_observations": {
        "study": ("study", None),
        "subject": ("subject", None),
        "assessed_at": ("datetime", None),
        "visit": ("visit", None),
    },
    "enrolment": {
        "study": ("study", None),
        "site": ("string", None),
        "subject": ("subject", None),
        "site_patient_id": ("string", None),
        "sex": ("code", "sex_code"),
        "birth_date": ("date", None),
        "consent_date": ("date", None),
        "randomisation_date": ("date", None),
        "arm": ("arm", None),
        "status": ("code", None),
        "end_date": ("date", None),
        "end_reason": ("string", None),
        "death_date": ("date", None),
        "strata": ("strata", None),
    },
    "adverse_event": {
        "study": ("study", None),
        "subject": ("subject", None),
        "ae_number": ("integer", None),
        "meddra_pt_code": ("string", "meddra_coding"),
        "meddra_pt_term": ("string", None),
        "onset_date": ("date", None),
        "resolution_date": ("date", None),
        "ctcae_grade": ("integer", "ctcae_grade"),
        "serious": ("code", "coding"),
        "relatedness": ("code", "coding"),
        "outcome": ("code", "coding"),
    },
    "medication_administration": {
        "study": ("study", None),
        "subject": ("subject", None),
        "administered_at": ("datetime", None),
        "intervention": ("intervention", None),
        "dose": ("decimal", None),
        "dose_unit": ("ucum", None),
        "route": ("code", "coding"),
    },
}
BUILDER_RESOURCES: dict[str, tuple[str, ...]] = {
    "lab_observation": ("Observation",),
    "scale_observations": ("Observation",),
    "enrolment": ("Patient", "ResearchSubject"),
    "adverse_event": ("AdverseEvent",),
    "medication_administration": ("MedicationAdministration",),
}


class Column(Strict):
    """One CSV column: how its cells are read and checked, and the transform applied to them."""

    type: ColumnType
    description: str
    required: bool = Field(default=True, description="false: the cell may be empty (the column is still required)")
    values: list[str] | None = Field(default=None, description="allowed values (code columns)")
    min: Decimal | None = None
    max: Decimal | None = None
    pattern: str | None = Field(default=None, description="a regular expression the whole cell must match")
    transform: str | None = None
    table: str | None = Field(default=None, description="the name of one of the spec's tables")
    with_: list[str] = Field(default_factory=list, alias="with", description="earlier columns the transform reads")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Column:
        if self.transform is not None:
            transform = TRANSFORMS.get(self.transform)
            if transform is None:
                raise ValueError(f"unknown transform {self.transform!r}; known: {', '.join(TRANSFORMS)}")
            if (transform.table is None) != (self.table is None):
                raise ValueError(
                    f"transform {self.transform} {'takes a table' if transform.table is not None else 'takes no table'}"
                )
            if len(self.with_) != transform.inputs:
                raise ValueError(f"transform {self.transform} reads {transform.inputs} other column(s) (with:)")
        elif self.table is not None or self.with_:
            raise ValueError("table and with go with a transform")
        if (self.min is not None or self.max is not None) and self.type not in ("integer", "decimal"):
            raise ValueError("min and max apply to integer and decimal columns")
        if self.values is not None and self.type != "code":
            raise ValueError("values apply to code columns")
        return self


class ScaleItem(Strict):
    """One item of a rating scale: its column, its measure code, range and weight in the total."""

    column: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    code: Code
    display: str
    min: int = 0
    max: int
    weight: int = Field(default=1, ge=1)

    @field_validator("code", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        return parse_code(value)


class ScaleTotal(Strict):
    code: Code
    display: str
    min: int
    max: int
    method: str = Field(description="how the total is computed, in words (Observation.method.text)")

    @field_validator("code", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        return parse_code(value)


class Scale(Strict):
    """A rating scale: item Observations (or components of the total) and the total the service computes."""

    total: ScaleTotal
    category: Literal["survey", "exam"] = Field(default="survey", description="Observation.category")
    items_as: Literal["observations", "components"] = "observations"
    items: list[ScaleItem] = Field(min_length=1)
    max_of: list[list[str]] = Field(default_factory=list, description="groups of which only the highest counts")

    @model_validator(mode="after")
    def _total_range(self) -> Scale:
        columns = [i.column for i in self.items]
        duplicates = sorted({c for c in columns if columns.count(c) > 1})
        if duplicates:
            raise ValueError(f"duplicate item columns: {', '.join(duplicates)}")
        grouped: list[str] = [c for group in self.max_of for c in group]
        problems = [f"max_of names unknown item {c!r}" for c in grouped if c not in columns]
        problems += [
            f"item {c!r} is in two max_of groups" for c in sorted({c for c in grouped if grouped.count(c) > 1})
        ]
        problems += [f"max_of group {g} has fewer than two items" for g in self.max_of if len(g) < 2]
        if problems:
            raise ValueError("; ".join(problems))
        by_column = {i.column: i for i in self.items}
        ungrouped = [i for i in self.items if i.column not in grouped]
        low = sum(i.min * i.weight for i in ungrouped) + sum(
            max(by_column[c].min * by_column[c].weight for c in g) for g in self.max_of
        )
        high = sum(i.max * i.weight for i in ungrouped) + sum(
            max(by_column[c].max * by_column[c].weight for c in g) for g in self.max_of
        )
        if (low, high) != (self.total.min, self.total.max):
            raise ValueError(f"the items add up to {low}-{high}, not the total's {self.total.min}-{self.total.max}")
        return self


class SourceSpec(Strict):
    """One CSV source kind (mappings/sources/<kind>.yaml)."""

    kind: str = Field(pattern=KIND, description="the file name stem; POST /api/imports/<kind>")
    title: str
    description: str
    builder: Builder
    resources: list[str] = Field(min_length=1)
    key: list[str] = Field(min_length=1, description="columns that identify a row; resource ids hash them")
    columns: dict[str, Column] = Field(min_length=1)
    tables: dict[str, Any] = Field(default_factory=dict)
    scale: Scale | None = None
    _tables: dict[str, Any] = PrivateAttr(default_factory=dict)
    _all_columns: dict[str, Column] = PrivateAttr(default_factory=dict)

    @field_validator("columns")
    @classmethod
    def _column_names(cls, value: dict[str, Column]) -> dict[str, Column]:
        bad = [name for name in value if not re.fullmatch(r"[a-z][a-z0-9_]*", name)]
        if bad:
            raise ValueError(f"column names are lower_snake_case: {', '.join(bad)}")
        return value

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """What cannot be checked field by field, each with the element path it concerns; validates the tables."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        expected = BUILDER_RESOURCES[self.builder]
        if tuple(self.resources) != expected:
            problems.append((("resources",), f"builder {self.builder} writes {', '.join(expected)}"))
        if (self.scale is not None) != (self.builder == "scale_observations"):
            problems.append((("builder",), "scale goes with the scale_observations builder, and only with it"))
        names = list(self.columns)
        for name, column in self.columns.items():
            for earlier in column.with_:
                if earlier not in names[: names.index(name)]:
                    problems.append((("columns", name, "with"), f"{earlier!r} is not an earlier column"))
            if column.table is not None and column.table not in self.tables:
                problems.append((("columns", name, "table"), f"unknown table {column.table!r}"))
        for name, (kind, transform) in BUILDER_COLUMNS[self.builder].items():
            needed = self.columns.get(name)
            if needed is None:
                problems.append((("columns",), f"builder {self.builder} reads column {name!r}; define it"))
            elif needed.type != kind or needed.transform != transform:
                needs = f"type {kind}" + (f" and transform {transform}" if transform else " and no transform")
                problems.append((("columns", name), f"builder {self.builder} needs {needs}"))
        problems += [(("key",), f"{k!r} is not a column") for k in self.key if k not in self.columns]
        if self.columns.get(self.key[0]) is None or self.columns[self.key[0]].type != "study":
            problems.append((("key",), "the key starts with the study column (ids hash the study first)"))
        if self.scale is not None:
            for index, item in enumerate(self.scale.items):
                if item.column in self.columns:
                    problems.append((("scale", "items", index, "column"), f"{item.column!r} is also a column"))
        used = {c.table: TRANSFORMS[c.transform].table for c in self.columns.values() if c.table and c.transform}
        for name, shape in used.items():
            if name not in self.tables:
                continue
            try:
                self._tables[name] = TypeAdapter(shape).validate_python(self.tables[name])
            except ValidationError as exc:
                problems += [(("tables", name, *e["loc"]), str(e["msg"])) for e in exc.errors()]
        problems += [(("tables", name), "no column uses this table") for name in sorted(set(self.tables) - set(used))]
        return problems

    def table(self, name: str) -> Any:
        """A code table, validated as the transform that uses it expects."""
        if name not in self._tables:
            found = self.problems()
            if found:
                raise ValueError(f"spec {self.kind}: " + "; ".join(f"{'.'.join(map(str, p))}: {m}" for p, m in found))
        return self._tables[name]

    def all_columns(self) -> dict[str, Column]:
        """The declared columns plus, for a scale, one integer column per item (empty cell: item missing)."""
        if not self._all_columns:
            self._all_columns.update(self._columns())
        return self._all_columns

    def _columns(self) -> dict[str, Column]:
        if self.scale is None:
            return dict(self.columns)
        items = {
            item.column: Column(
                type="integer",
                description=item.display,
                required=False,
                min=Decimal(item.min),
                max=Decimal(item.max),
            )
            for item in self.scale.items
        }
        return {**self.columns, **items}


@dataclass(frozen=True)
class SourceRegistry:
    """The loaded source specs, by kind."""

    specs: Mapping[str, SourceSpec]

    def get(self, kind: str) -> SourceSpec | None:
        return self.specs.get(kind)

    def kinds(self) -> list[str]:
        return sorted(self.specs)

    def __iter__(self) -> Iterator[SourceSpec]:
        return iter(self.specs.values())

    def __len__(self) -> int:
        return len(self.specs)


def load_source(path: Path) -> SourceSpec:
    spec = load_model(path, SourceSpec)
    _, lines = load_yaml(path)
    problems = [(_line_of(lines, loc), f"{'.'.join(map(str, loc))}: {message}") for loc, message in spec.problems()]
    if spec.kind != path.stem:
        problems.insert(0, (lines.get(("kind",), 1), f"kind {spec.kind!r} must equal the file name {path.stem!r}"))
    if problems:
        raise SpecError(path, problems)
    return spec


def _line_of(lines: Mapping[tuple[str | int, ...], int], loc: tuple[str | int, ...]) -> int | None:
    for end in range(len(loc), -1, -1):
        found = lines.get(loc[:end])
        if found is not None:
            return found
    return None


def load_sources(directory: Path) -> SourceRegistry:
    """Every mappings/sources/*.yaml; SpecError (file, line, reason) on the first bad one."""
    specs = {}
    for path in sorted(directory.glob("*.yaml")):
        spec = load_source(path)
        specs[spec.kind] = spec
    return SourceRegistry(specs)


__all__ = [
    "BUILDER_COLUMNS",
    "BUILDER_RESOURCES",
    "Column",
    "Scale",
    "ScaleItem",
    "SourceRegistry",
    "SourceSpec",
    "load_source",
    "load_sources",
]
