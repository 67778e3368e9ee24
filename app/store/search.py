"""FHIR search: query parameters parsed against the indexed definitions and compiled to SQL.

Each parameter becomes `res_id IN (SELECT res_id FROM idx_<type> WHERE ...)` over its index table;
repeated parameters AND together, comma-separated values OR together. A parameter this server does
not index is an error (400) unless the client asked for lenient handling: a search that silently
ignores a criterion returns the wrong cohort.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from types import SimpleNamespace
from typing import Any, Protocol
from urllib.parse import parse_qsl

import orjson
from sqlalchemy import ColumnElement, FromClause, Select, and_, exists, false, func, literal, not_, or_, select, true

from app.fhir import ucum
from app.fhir.dates import date_range
from app.fhir.definitions import SearchParameter, resource_types, search_parameters
from app.fhir.errors import FhirError, Issue, bad_request, not_supported
from app.store.indexer import indexed_parameters, normalize_text, parse_reference, stored_as
from app.store.schema import INDEX_TABLES, Resource

resource_table = Resource.__table__  # type: ignore[attr-defined]

# Result parameters: they shape the answer rather than select resources.
RESULT_PARAMETERS = frozenset(
    {
        "_count",
        "_offset",
        "_page",
        "_sort",
        "_summary",
        "_total",
        "_elements",
        "_include",
        "_revinclude",
        "_format",
        "_pretty",
        "_contained",
        "_containedType",
    }
)
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_MODIFIERS = {
    "token": {"not", "text", "missing", "below", "above", "in", "not-in", "of-type"},
    "string": {"exact", "contains", "missing"},
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "reference": {"missing", "identifier"},  # plus :<ResourceType>
    "uri": {"missing", "below", "above"},
    "composite": {"missing"},
}
_IMPLEMENTED_MODIFIERS = {
    "token": {"not", "text", "missing", "of-type"},
    "string": {"exact", "contains", "missing"},
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "reference": {"missing", "identifier"},
    "uri": {"missing", "below"},
    "composite": {"missing"},
}
_FAR_PAST = datetime(1, 1, 1, tzinfo=UTC)
_FAR_FUTURE = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Criterion:
    """One search parameter with its values (OR). `chain` is what follows a reference parameter
    (`subject:Patient.identifier` -> name subject, modifier Patient, chain identifier); for reverse
    chaining the name is `_has` and the modifier the rest (`Observation:patient:code`)."""

    name: str
    modifier: str | None
    values: tuple[str, ...]
    chain: str | None = None


@dataclass
class SearchRequest:
    """A parsed search: the criteria that select, the result parameters, and what was ignored."""

    resource_type: str
    criteria: list[Criterion] = field(default_factory=list)
    count: int | None = None
    offset: int = 0
    page_token: str | None = None  # _page: where the previous page ended (see compile_select)
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (parameter, descending)
    summary: str | None = None
    total: str | None = None
    elements: list[str] = field(default_factory=list)
    include: list[str] = field(default_factory=list)
    revinclude: list[str] = field(default_factory=list)
    ignored: list[Issue] = field(default_factory=list)  # lenient handling: reported, never silent

    def include_specs(self) -> list[IncludeSpec]:
        return [_include_spec(v, reverse=False) for v in self.include] + [
            _include_spec(v, reverse=True) for v in self.revinclude
        ]


@dataclass(frozen=True, slots=True)
class IncludeSpec:
    """_include / _revinclude = source:param[:target], param may be `*`; `iterate` follows it repeatedly."""

    source: str
    param: str
    target: str | None
    iterate: bool
    reverse: bool


def _include_spec(value: str, *, reverse: bool) -> IncludeSpec:
    iterate = value.startswith("iterate:")
    source, param, *target = value.removeprefix("iterate:").split(":")
    return IncludeSpec(source, param, target[0] if target else None, iterate, reverse)


def _check_include(name: str, value: str, modifier: str, searched_type: str) -> str:
    """_include=Source:param[:Target] (param may be *) must name a reference parameter of Source; without
    :iterate, an _include's Source is the searched type. Returns the value as IncludeSpec parses it."""
    if modifier not in ("", "iterate", "recurse"):
        raise bad_request(f"{name}:{modifier} is not a modifier of {name}; use :iterate.", name)
    parts = value.split(":")
    if len(parts) not in (2, 3):
        raise bad_request(f"{name}={value!r}: expected SourceType:parameter[:TargetType].", name)
    source, param = parts[0], parts[1]
    if source not in resource_types():
        raise bad_request(f"{name}={value!r}: {source!r} is not a resource type.", name)
    if name == "_include" and not modifier and source != searched_type:
        raise bad_request(
            f"_include={value!r} must start with the searched type {searched_type} (or use _include:iterate).", name
        )
    if len(parts) == 3 and parts[2] not in resource_types():
        raise bad_request(f"{name}={value!r}: {parts[2]!r} is not a resource type.", name)
    definition = indexed_parameters(source).get(param)
    if param != "*" and (definition is None or definition.type != "reference"):
        raise bad_request(f"{name}={value!r}: {param!r} is not a reference search parameter of {source}.", name)
    return f"iterate:{value}" if modifier else value


def _split_values(raw: str) -> tuple[str, ...]:
    """Comma separates alternatives; a backslash escapes a literal comma, pipe or dollar."""
    parts = re.split(r"(?<!\\),", raw)
    return tuple(p.replace("\\,", ",") for p in parts if p != "")


def parse_search(
    resource_type: str,
    params: Iterable[tuple[str, str]],
    *,
    lenient: bool = False,
    default_count: int = 50,
    max_count: int = 1000,
) -> SearchRequest:
    request = SearchRequest(resource_type, count=default_count)
    for raw_name, raw_value in params:
        if raw_name.partition(":")[0] in RESULT_PARAMETERS:
            name, _, modifier = raw_name.partition(":")
            _apply_result_parameter(request, name, modifier, raw_value, max_count, f"{resource_type}?{raw_name}")
            continue
        criterion = _criterion(raw_name, ())
        problem = _check_criterion(resource_type, criterion)
        if problem is not None:
            if lenient:
                request.ignored.append(Issue("not-supported", problem, (raw_name,), "warning"))
                continue
            raise not_supported(problem, raw_name)
        values = _split_values(raw_value)
        if not values:
            raise bad_request(f"Search parameter {raw_name!r} has no value.", raw_name)
        request.criteria.append(Criterion(criterion.name, criterion.modifier, values, criterion.chain))
    return request


def _criterion(raw_name: str, values: tuple[str, ...]) -> Criterion:
    """Split a parameter name into name, modifier and chain: `_has:A:b:c`, `subject:Patient.name:exact`."""
    if raw_name.startswith("_has:"):
        return Criterion("_has", raw_name[len("_has:") :], values)
    head, _, chain = raw_name.partition(".")
    name, _, modifier = head.partition(":")
    return Criterion(name, modifier or None, values, chain or None)


def _check_criterion(resource_type: str, criterion: Criterion) -> str | None:
    """Why this (possibly chained) parameter cannot be searched on `resource_type`, or None."""
    if criterion.name == "_has":
        return _check_has(resource_type, criterion.modifier or "")
    known = indexed_parameters(resource_type)
    problem = _check_parameter(resource_type, known, criterion.name, criterion.modifier or "")
    if problem is not None or criterion.chain is None:
        return problem
    param = known[criterion.name]
    if param.type != "reference":
        return f"{criterion.name} is a {param.type} parameter; only reference parameters can be chained."
    targets = _chain_targets(resource_type, criterion)
    if not targets:
        return (
            f"No resource type that {resource_type}.{criterion.name} can refer to has a search parameter "
            f"{criterion.chain.split('.')[0].split(':')[0]!r}; name the type (e.g. {criterion.name}:Patient.x)."
        )
    return None


def _chain_targets(resource_type: str, criterion: Criterion) -> list[str]:
    """The target types a chained criterion can continue on (the named type, or every allowed target)."""
    assert criterion.chain is not None
    param = indexed_parameters(resource_type)[criterion.name]
    candidates = [criterion.modifier] if criterion.modifier else list(param.targets or sorted(resource_types()))
    inner = _criterion(criterion.chain, criterion.values)
    return [t for t in candidates if t in resource_types() and _check_criterion(t, inner) is None]


def _check_has(resource_type: str, rest: str) -> str | None:
    parts = rest.split(":", 2)
    if len(parts) != 3:
        return f"_has:{rest} must read _has:Type:reference-parameter:search-parameter."
    source_type, ref_param, inner = parts
    if source_type not in resource_types():
        return f"_has:{rest}: {source_type!r} is not a resource type."
    reference = indexed_parameters(source_type).get(ref_param)
    if reference is None or reference.type != "reference":
        return f"_has:{rest}: {ref_param!r} is not a reference search parameter of {source_type}."
    if reference.targets and resource_type not in reference.targets:
        return f"_has:{rest}: {source_type}.{ref_param} cannot refer to {resource_type}."
    return _check_criterion(source_type, _criterion(inner, ()))


def _check_parameter(resource_type: str, known: dict[str, SearchParameter], name: str, modifier: str) -> str | None:
    if name in ("_id", "_lastUpdated"):
        return (
            None
            if (modifier in ("", "missing", "not") if name == "_id" else not modifier)
            else (f"Modifier :{modifier} is not supported on {name}.")
        )
    param = known.get(name)
    if param is None:
        return (
            f"Unknown or unsupported search parameter {name!r} for {resource_type}. "
            f"Supported: {', '.join(sorted([*known, '_id', '_lastUpdated']))}."
        )
    if modifier and param.type == "reference" and modifier in resource_types():
        return (
            None
            if not param.targets or modifier in param.targets
            else (f"{name} cannot refer to {modifier}; allowed targets: {', '.join(param.targets)}.")
        )
    if modifier == "of-type" and not any(path.fhir_type == "Identifier" for path in param.paths):
        return f"Modifier :of-type applies to identifier parameters; {name!r} is not one."
    if modifier and modifier not in _IMPLEMENTED_MODIFIERS.get(param.type, set()):
        known_here = modifier in _MODIFIERS.get(param.type, set())
        return (
            f"Modifier :{modifier} on {param.type} parameter {name!r} is "
            f"{'not supported by this server yet' if known_here else 'not defined by FHIR'}."
        )
    return None


def _apply_result_parameter(
    request: SearchRequest, name: str, modifier: str, value: str, max_count: int, where: str
) -> None:
    if name == "_page":
        request.page_token = value
        return
    if name in ("_count", "_offset"):
        try:
            number = int(value) if re.fullmatch(r"[0-9]{1,9}", value) else -1
            if number < 0:
                raise ValueError
        except ValueError:
            raise bad_request(f"{name} must be a non-negative whole number, got {value!r}.", name) from None
        if name == "_count":
            request.count = min(number, max_count)
        else:
            request.offset = number
    elif name == "_sort":
        for key in _split_values(value):
            request.sort.append((key.lstrip("-"), key.startswith("-")))
    elif name == "_summary":
        if value in ("true", "text"):
            raise not_supported(f"_summary={value} is not supported yet; use _elements to choose elements.", name)
        if value not in ("false", "count", "data"):
            raise bad_request(f"_summary must be true, false, count, text or data; got {value!r}.", name)
        request.summary = value
        if value == "count":
            request.count = 0
    elif name == "_total":
        if value not in ("none", "estimate", "accurate"):
            raise bad_request(f"_total must be none, estimate or accurate; got {value!r}.", name)
        request.total = value
    elif name == "_elements":
        request.elements.extend(_split_values(value))
    elif name in ("_include", "_revinclude"):
        checked = _check_include(name, value, modifier, request.resource_type)
        (request.include if name == "_include" else request.revinclude).append(checked)
    elif name in ("_contained", "_containedType"):
        raise not_supported(f"{name} is not supported.", name)


# ------------------------------------------------------------------------------------------ compiling


class _ColumnsByName(Protocol):
    def __getattr__(self, name: str) -> ColumnElement[Any]: ...


class _Table(Protocol):
    """What the per-type conditions read: columns by name under `.c`. An index table (an alias of one), or
    one component's view of a composite table under the single-type names (`_component_columns`)."""

    @property
    def c(self) -> _ColumnsByName: ...


def _prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in PREFIXES and (value[2].isdigit() or value[2] in "-+."):
        return value[:2], value[2:]
    return "eq", value


def _range_condition(
    prefix: str, low: ColumnElement[Any], high: ColumnElement[Any], value_low: datetime, value_high: datetime, name: str
) -> ColumnElement[bool]:
    """FHIR's prefix semantics between a stored range [low, high] and a searched range [value_low, value_high]."""
    if prefix == "eq":
        return and_(low >= value_low, high <= value_high)
    if prefix == "ne":
        return or_(low < value_low, high > value_high)
    if prefix == "gt":
        return high > value_high
    if prefix == "lt":
        return low < value_low
    if prefix == "ge":
        return high >= value_low
    if prefix == "le":
        return low <= value_high
    if prefix == "sa":
        return low > value_high
    if prefix == "eb":
        return high < value_low
    if prefix == "ap":
        return and_(low <= value_high, high >= value_low)
    raise bad_request(f"Unknown prefix {prefix!r} in {name}.", name)


def _date_condition(low: Any, high: Any, raw: str, name: str) -> ColumnElement[bool]:
    prefix, text = _prefix(raw)
    bounds = date_range(text)
    if bounds is None:
        raise bad_request(f"{name}: {text!r} is not a FHIR date, dateTime or instant (e.g. 2024-03-01).", name)
    value_low, value_high = bounds
    if prefix == "ap":  # approximately: widen by 10 % of the distance from now, at least a day
        slack = max(abs(datetime.now(UTC) - value_low) * 0.1, timedelta(days=1))
        value_low = value_low - slack if value_low - _FAR_PAST > slack else _FAR_PAST
        value_high = value_high + slack if _FAR_FUTURE - value_high > slack else _FAR_FUTURE
    return _range_condition(
        prefix, func.coalesce(low, _FAR_PAST), func.coalesce(high, _FAR_FUTURE), value_low, value_high, name
    )


def _number_condition(column: ColumnElement[Any], raw: str, name: str) -> ColumnElement[bool]:
    prefix, text = _prefix(raw)
    try:
        number = Decimal(text)
        if not number.is_finite() or abs(number.adjusted()) > 300:
            raise InvalidOperation
    except InvalidOperation:
        raise bad_request(f"{name}: {text!r} is not a (finite, reasonably sized) number.", name) from None
    # Implicit precision: 100 means [99.5, 100.5); 1e2 means [50, 150).
    exponent = number.as_tuple().exponent
    half = Decimal(5).scaleb(int(exponent) - 1) if isinstance(exponent, int) else Decimal(0)
    low, high = float(number - half), float(number + half)
    exact = float(number)
    if prefix == "eq":
        return and_(column >= low, column < high)
    if prefix == "ne":
        return or_(column < low, column >= high)
    if prefix == "ap":
        slack = abs(exact) * 0.1
        return and_(column >= exact - slack, column <= exact + slack)
    return {
        "gt": column > exact,
        "lt": column < exact,
        "ge": column >= exact,
        "le": column <= exact,
        "sa": column > exact,
        "eb": column < exact,
    }[prefix]


def _token_condition(table: _Table, raw: str, modifier: str | None) -> ColumnElement[bool]:
    if modifier == "text":
        return table.c.text.like(_like_prefix(normalize_text(raw)) + "%", escape="\\")
    if "|" in raw:
        system, _, code = raw.partition("|")
        if not system:
            return and_(table.c.system.is_(None), table.c.code == code)
        if not code:
            return table.c.system == system
        return and_(table.c.system == system, table.c.code == code)
    return table.c.code == raw


def _of_type_condition(table: _Table, raw: str, name: str) -> ColumnElement[bool]:
    """`identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|12345`."""
    parts = raw.split("|")
    if len(parts) != 3 or not all(parts):
        raise bad_request(
            f"{name}:of-type takes system|code|value (the identifier type, then its value); got {raw!r}.",
            f"{name}:of-type",
        )
    system, code, value = parts
    return and_(table.c.system == system, table.c.code == f"{code}|{value}")


def _like_prefix(text: str) -> str:
    """`text` as a literal LIKE prefix: its own %, _ and \\ escaped."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _string_condition(table: _Table, raw: str, modifier: str | None) -> ColumnElement[bool]:
    if modifier == "exact":
        return table.c.exact == raw
    needle = _like_prefix(normalize_text(raw))
    if modifier == "contains":
        return table.c.value.like(f"%{needle}%", escape="\\")
    return table.c.value.like(f"{needle}%", escape="\\")


def _reference_condition(table: _Table, param: SearchParameter, raw: str, modifier: str | None) -> ColumnElement[bool]:
    if modifier == "identifier":
        system, _, value = raw.rpartition("|")
        condition = table.c.identifier_value == value
        return and_(table.c.identifier_system == system, condition) if system else condition
    if "://" in raw:
        # Another server's resource is indexed by its URL only; one on this server (written relative) by type
        # and id. Without the request's base the two cannot be told apart here, so both are matched.
        target_type, target_id, _ = parse_reference(raw)
        by_url = table.c.url == raw
        if target_id is None:
            return by_url
        return or_(by_url, and_(table.c.target_type == target_type, table.c.target_id == target_id))
    target_type, target_id, _ = parse_reference(raw)
    if target_id is None:  # a bare id
        condition = table.c.target_id == raw
        return and_(table.c.target_type == modifier, condition) if modifier else condition
    if modifier and modifier != target_type:
        return false()
    return and_(table.c.target_type == target_type, table.c.target_id == target_id)


def _canonical_condition(
    column: ColumnElement[Any], raw: str, conversion: ucum.Conversion, name: str
) -> ColumnElement[bool]:
    """`_number_condition`'s prefix semantics on `column` (canonical values), for a number given in a UCUM unit.

    The searched number, its implicit precision range (100 is [99.5, 100.5)) and the `ap` range are
    taken in the searched unit, then converted (an increasing map, so bounds stay bounds). Canonical
    values reached by different units can differ in their last bits, so values within
    `ucum.RELATIVE_TOLERANCE` of a bound count as equal to it: 4000 /mm3 is not `lt4` 10*3/uL.
    """
    prefix, text = _prefix(raw)
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise bad_request(f"{name}: {text!r} is not a number.", name) from None
    if not number.is_finite():
        raise bad_request(f"{name}: {text!r} is not a number.", name)
    scale, offset, tolerance = conversion.scale, conversion.offset, ucum.RELATIVE_TOLERANCE

    def at(value: Decimal) -> float:
        return float(value) * scale + offset

    def below(value: Decimal) -> float:  # the bound, moved down by the tolerance
        bound = at(value)
        return bound - abs(bound) * tolerance

    def above(value: Decimal) -> float:
        bound = at(value)
        return bound + abs(bound) * tolerance

    exponent = number.as_tuple().exponent
    half = Decimal(5).scaleb(int(exponent) - 1) if isinstance(exponent, int) else Decimal(0)
    if prefix == "eq":
        return and_(column >= below(number - half), column < below(number + half))
    if prefix == "ne":
        return or_(column < below(number - half), column >= below(number + half))
    if prefix == "ap":
        slack = abs(number) * Decimal("0.1")
        return and_(column >= below(number - slack), column <= above(number + slack))
    if prefix in ("gt", "sa"):
        return column > above(number)
    if prefix in ("lt", "eb"):
        return column < below(number)
    if prefix == "ge":
        return column >= below(number)
    if prefix == "le":
        return column <= above(number)
    raise bad_request(f"Unknown prefix {prefix!r} in {name}.", name)


def _quantity_condition(table: _Table, raw: str, name: str) -> ColumnElement[bool]:
    """`number`, `number|system|code`, `number||code`. With the UCUM system and a convertible code, the
    comparison is on the canonical form (`app.fhir.ucum`): 3900 pg/mL matches `gt3.7|<ucum>|ng/mL`.
    Otherwise (no unit, another system, a code UCUM cannot convert) it is on the value and the code as written."""
    number, _, unit_part = raw.partition("|")
    system, _, code = unit_part.partition("|")
    if code and system == ucum.UCUM_SYSTEM:
        conversion = ucum.conversion(code)
        if conversion is not None:
            return and_(
                table.c.canonical_code == conversion.canonical_code,
                _canonical_condition(table.c.canonical_value, number, conversion, name),
            )
    condition = _number_condition(table.c.value, number, name)
    if unit_part:
        if code:
            condition = and_(condition, table.c.code == code)
            if system:
                condition = and_(condition, table.c.system == system)
        elif system:  # value||unit form omitted system: 'value|unit' is not FHIR; treat as code
            condition = and_(condition, or_(table.c.code == system, table.c.unit == system))
    return condition


def param_rows(table: Any, resource_type: str, name: str, suffix: str = "") -> ColumnElement[bool]:
    """The index rows of parameter `name` of `resource_type` (`suffix`: ":of-type" for its type rows). A
    synonym, a union of other parameters or a target-restricted reference has no rows of its own: the rows it
    is stored as are read (see `indexer.stored_as`)."""
    stored = stored_as(resource_type, name)
    codes = [code + suffix for code in stored.params]
    condition = and_(
        table.c.res_type == resource_type, table.c.param == codes[0] if len(codes) == 1 else table.c.param.in_(codes)
    )
    if stored.target_types:
        condition = and_(condition, table.c.target_type.in_(stored.target_types))
    return condition


def _chain_condition(resource_type: str, criterion: Criterion, res: FromClause) -> ColumnElement[bool]:
    """`subject:Patient.identifier=x`: resources whose subject is a Patient matching identifier=x."""
    assert criterion.chain is not None
    refs = INDEX_TABLES["reference"].alias()
    inner = _criterion(criterion.chain, criterion.values)
    per_type = []
    for target_type in _chain_targets(resource_type, criterion):
        target = resource_table.alias()
        matching = select(target.c.res_id).where(
            target.c.res_type == target_type,
            target.c.deleted == false(),
            _criterion_condition(target_type, inner, target),
        )
        per_type.append(and_(refs.c.target_type == target_type, refs.c.target_id.in_(matching)))
    referring = select(refs.c.res_id).where(param_rows(refs, resource_type, criterion.name), or_(*per_type))
    return res.c.res_id.in_(referring)


def _has_condition(resource_type: str, criterion: Criterion, res: FromClause) -> ColumnElement[bool]:
    """`_has:Observation:patient:code=x`: resources some Observation with code x refers to by `patient`."""
    source_type, ref_param, inner_name = (criterion.modifier or "").split(":", 2)
    inner = _criterion(inner_name, criterion.values)
    source = resource_table.alias()
    matching = select(source.c.res_id).where(
        source.c.res_type == source_type, source.c.deleted == false(), _criterion_condition(source_type, inner, source)
    )
    refs = INDEX_TABLES["reference"].alias()
    referred = select(refs.c.target_id).where(
        param_rows(refs, source_type, ref_param),
        refs.c.target_type == resource_type,
        refs.c.res_id.in_(matching),
    )
    return res.c.res_id.in_(referred)


def _component_columns(table: _Table, prefix: str) -> _Table:
    """The composite table's columns for one component, under the names the single-type conditions use."""
    names = ("system", "code", "value", "unit", "canonical_value", "canonical_code", "low", "high", "text")
    columns = {n: getattr(table.c, f"{prefix}_{n}") for n in names if hasattr(table.c, f"{prefix}_{n}")}
    return SimpleNamespace(c=SimpleNamespace(**columns))


def _composite_condition(
    resource_type: str, table: _Table, param: SearchParameter, raw: str, name: str
) -> ColumnElement[bool]:
    """`code-value-quantity=http://loinc.org|8480-6$gt140`: both parts must hold in the same element."""
    parts = re.split(r"(?<!\\)\$", raw)
    if len(parts) != 2:
        raise bad_request(f"{name} takes two values joined by '$' (e.g. code$value); got {raw!r}.", name)
    params = search_parameters(resource_type)
    first_kind, second_kind = (params[code].type for code, _ in param.components)
    first, second = _component_columns(table, "c1"), _component_columns(table, "c2")
    if first_kind == "reference":
        target_type, target_id, _ = parse_reference(parts[0])
        head = first.c.code == (target_id or parts[0])
        if target_type:
            head = and_(head, first.c.system == target_type)
    else:
        head = _token_condition(first, parts[0], None)
    value = parts[1]
    if second_kind == "token":
        tail = _token_condition(second, value, None)
    elif second_kind == "quantity":
        tail = _quantity_condition(second, value, name)
    elif second_kind == "date":
        tail = _date_condition(second.c.low, second.c.high, value, name)
    else:  # string components hold the normalised text, as idx_string.value does
        text = table.c.c2_text
        tail = _string_condition(SimpleNamespace(c=SimpleNamespace(value=text, exact=text)), value, None)
    return and_(head, tail)


def _criterion_condition(
    resource_type: str, criterion: Criterion, res: FromClause = resource_table, *, drives: bool = True
) -> ColumnElement[bool]:
    """The condition on `res` (the resource table or an alias of it) that one criterion imposes.

    `drives`: as `res_id IN (subquery)`, the form that lets the database start from this criterion's
    index rows. Otherwise as a correlated `EXISTS`, checked per candidate through the index tables'
    (res_type, res_id) index: without it SQLite materialises every IN list (all 100,000 rows of a
    lab code) even when another criterion (one patient's subject) leaves five candidates."""
    name, modifier = criterion.name, criterion.modifier
    if name == "_has":
        return _has_condition(resource_type, criterion, res)
    if criterion.chain is not None:
        return _chain_condition(resource_type, criterion, res)
    if name == "_id":
        if modifier == "missing":
            return false() if criterion.values[0] == "true" else true()
        condition = res.c.res_id.in_(criterion.values)
        return not_(condition) if modifier == "not" else condition
    if name == "_lastUpdated":
        column = res.c.last_updated
        return or_(*(_date_condition(column, column, v, name) for v in criterion.values))

    param = indexed_parameters(resource_type)[name]
    # An alias per subquery: nested chains over the same index table must never correlate.
    table = INDEX_TABLES[param.type].alias()
    owned = param_rows(table, resource_type, name, ":of-type" if modifier == "of-type" else "")

    if modifier == "missing":
        if criterion.values[0] not in ("true", "false"):
            raise bad_request(f"{name}:missing takes true or false.", f"{name}:missing")
        has_value = _membership(table, owned, res, drives)
        return not_(has_value) if criterion.values[0] == "true" else has_value

    alternatives: list[ColumnElement[bool]] = []
    for raw in criterion.values:
        if param.type == "token" and modifier == "of-type":
            alternatives.append(_of_type_condition(table, raw, name))
        elif param.type == "token":
            alternatives.append(_token_condition(table, raw, modifier if modifier != "not" else None))
        elif param.type == "string":
            alternatives.append(_string_condition(table, raw, modifier))
        elif param.type == "date":
            alternatives.append(_date_condition(table.c.low, table.c.high, raw, name))
        elif param.type == "number":
            alternatives.append(_number_condition(table.c.value, raw, name))
        elif param.type == "quantity":
            alternatives.append(_quantity_condition(table, raw, name))
        elif param.type == "reference":
            alternatives.append(_reference_condition(table, param, raw, modifier))
        elif param.type == "uri":
            alternatives.append(
                or_(
                    table.c.value == raw.rstrip("/"),
                    table.c.value.like(_like_prefix(raw.rstrip("/")) + "/%", escape="\\"),
                )
                if modifier == "below"
                else table.c.value == raw
            )
        elif param.type == "composite":
            alternatives.append(_composite_condition(resource_type, table, param, raw, name))
    membership = _membership(table, and_(owned, or_(*alternatives)), res, drives)
    return not_(membership) if modifier == "not" else membership


def _membership(table: _Table, condition: ColumnElement[bool], res: FromClause, drives: bool) -> ColumnElement[bool]:
    if drives:
        return res.c.res_id.in_(select(table.c.res_id).where(condition))
    return exists(
        select(literal(1)).where(table.c.res_type == res.c.res_type, table.c.res_id == res.c.res_id, condition)
    )


_SELECTIVITY = {"reference": 1, "token": 2, "composite": 2, "uri": 2, "string": 3}  # others (ranges): 4


def _selectivity(resource_type: str, criterion: Criterion) -> int:
    """A guess at how few rows a criterion selects (lower: fewer), to pick the one that drives the search."""
    if criterion.name == "_id":
        return 0
    if (
        criterion.name == "_has"
        or criterion.chain is not None
        or criterion.modifier in ("not", "missing", "text", "contains")
    ):
        return 5
    param = indexed_parameters(resource_type).get(criterion.name)
    if param is None:  # _lastUpdated
        return 4
    if param.type == "token" and criterion.name == "identifier":
        return 1
    return _SELECTIVITY.get(param.type, 4)


def where_clause(request: SearchRequest) -> ColumnElement[bool]:
    """The most selective criterion drives (IN); the others are checked per candidate (EXISTS)."""
    conditions = [resource_table.c.res_type == request.resource_type, resource_table.c.deleted == false()]
    ranked = sorted(request.criteria, key=lambda c: _selectivity(request.resource_type, c))
    conditions.extend(
        _criterion_condition(request.resource_type, c, drives=position == 0) for position, c in enumerate(ranked)
    )
    return and_(*conditions)


_SENTINELS: dict[str, tuple[Any, Any]] = {  # (lowest, highest) of each sort key kind, standing in for NULL
    "date": (_FAR_PAST, _FAR_FUTURE),
    "text": ("", "\U0010ffff"),
    "number": (-1e300, 1e300),
}


def _sort_key(resource_type: str, name: str, descending: bool) -> Any:
    """The expression a result is ordered by for `name`; a resource without a value sorts last either way."""
    if name == "_id":
        return resource_table.c.res_id
    if name == "_lastUpdated":
        return resource_table.c.last_updated
    param = indexed_parameters(resource_type).get(name)
    if param is None or param.type not in ("date", "string", "token", "number", "quantity", "uri"):
        raise not_supported(f"Cannot sort {resource_type} by {name!r}: not a sortable indexed parameter.", "_sort")
    table = INDEX_TABLES[param.type]
    column = table.c.low if param.type == "date" else table.c.code if param.type == "token" else table.c.value
    kind = "date" if param.type == "date" else "number" if param.type in ("number", "quantity") else "text"
    lowest, highest = _SENTINELS[kind]
    smallest = (func.max if descending else func.min)(column)
    value = (
        select(smallest)
        .where(param_rows(table, resource_type, name), table.c.res_id == resource_table.c.res_id)
        .scalar_subquery()
    )
    return func.coalesce(value, lowest if descending else highest)


def sort_keys(request: SearchRequest) -> list[tuple[Any, bool]]:
    """(expression, descending) for each _sort key, then the id: a total order, so pages never overlap."""
    keys = [(_sort_key(request.resource_type, name, desc), desc) for name, desc in request.sort]
    return [*keys, (resource_table.c.res_id, False)]


def _after(keys: list[tuple[Any, bool]], values: list[Any]) -> ColumnElement[bool]:
    """Rows strictly after `values` in the order `keys` define (a row-value comparison, spelled out)."""
    alternatives = []
    for position, (key, descending) in enumerate(keys):
        ties = [k == v for (k, _), v in zip(keys[:position], values[:position], strict=True)]
        alternatives.append(and_(*ties, key < values[position] if descending else key > values[position]))
    return or_(*alternatives)


def _sort_signature(request: SearchRequest) -> str:
    return ",".join(f"{'-' if desc else ''}{name}" for name, desc in request.sort)


def encode_page_token(request: SearchRequest, values: Sequence[Any]) -> str:
    """The sort values of a page's last row (and the sort they belong to), as an opaque `_page` token."""
    plain = [{"dt": v.isoformat()} if isinstance(v, datetime) else v for v in values]
    return (
        base64.urlsafe_b64encode(orjson.dumps({"sort": _sort_signature(request), "after": plain})).decode().rstrip("=")
    )


def _decode_page_token(request: SearchRequest, token: str, expected: int) -> list[Any]:
    try:
        plain = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if plain["sort"] != _sort_signature(request):
            raise ValueError("token from another sort order")
        values = [datetime.fromisoformat(v["dt"]) if isinstance(v, dict) else v for v in plain["after"]]
        if not all(isinstance(v, str | int | float | datetime) and not isinstance(v, bool) for v in values):
            raise ValueError("not a sort value")
        if values and not isinstance(values[-1], str):
            raise ValueError("the last value is an id")
    except (ValueError, TypeError, KeyError, orjson.JSONDecodeError):
        values = []
    if len(values) != expected:
        raise bad_request(
            "The _page token is not one this server issued for this search; follow the links of "
            "the searchset as given.",
            "_page",
        )
    return values


def compile_select(request: SearchRequest) -> Select[Any]:
    """The ordered, paged SELECT of matching current resources, with the sort values as columns k0..kn.

    Paging is keyset-based: a `next` link carries the last row's sort values, so a page starts right
    after them even when resources were created or deleted in between (no repeats, no skips).
    """
    keys = sort_keys(request)
    statement = select(resource_table, *(key.label(f"k{i}") for i, (key, _) in enumerate(keys)))
    statement = statement.where(where_clause(request))
    if request.page_token is not None:
        statement = statement.where(_after(keys, _decode_page_token(request, request.page_token, len(keys))))
    else:
        statement = statement.offset(request.offset)
    statement = statement.order_by(*(key.desc() if desc else key.asc() for key, desc in keys))
    if request.count is not None:
        statement = statement.limit(request.count)
    return statement


def compile_count(request: SearchRequest) -> Select[Any]:
    return select(func.count()).select_from(resource_table).where(where_clause(request))


def canonical_condition(query: str) -> str:
    """One spelling per condition: decoded, parameters sorted (`b=2&a=1` and `a=1&b=2` are the same)."""
    return "&".join(f"{k}={v}" for k, v in sorted(parse_qsl(query, keep_blank_values=True)))


def conditional_request(resource_type: str, query: str, *, where: str) -> SearchRequest:
    """Parse the query part of a conditional interaction (`identifier=sys|val`); strict, no result params."""
    pairs = parse_qsl(query, keep_blank_values=True)
    if not pairs:
        raise bad_request(f"The condition {query!r} selects nothing: give at least one search parameter.", where)
    shaping = sorted({k for k, _ in pairs if k.partition(":")[0] in RESULT_PARAMETERS} - {"_format", "_pretty"})
    if shaping:
        raise bad_request(
            f"The condition {query!r} uses {', '.join(shaping)}, which shape results rather than "
            "select resources; a condition must be search criteria only.",
            where,
        )
    try:
        request = parse_search(resource_type, pairs)
    except FhirError as exc:
        raise FhirError(exc.status, [Issue(i.code, i.diagnostics, (where,)) for i in exc.issues]) from None
    if not request.criteria:
        raise bad_request(
            f"The condition {query!r} has no search criteria: it would match every {resource_type}.", where
        )
    request.count = None
    return request


__all__: Sequence[str] = ["SearchRequest", "compile_count", "compile_select", "conditional_request", "parse_search"]
