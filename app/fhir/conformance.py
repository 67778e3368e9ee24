"""R4 conformance checks the fhir.resources models do not make, on a resource's plain JSON dict.

* codes of ``required`` bindings: ``code`` elements anywhere (resource, backbone elements, datatypes such as
  ``HumanName.use`` or ``Quantity.comparator``, extension values, contained resources), and the codings of
  ``Coding``/``CodeableConcept`` elements whose ``system`` is a code system of the bound value set (codings
  from other systems are left alone). Value sets that cannot be enumerated from the packaged code systems
  (mime types, currencies, UCUM units) are not checked: see ``definitions.skipped_bindings()``.
* reference target types: ``Type/id``, ``Type/id/_history/v``, ``http(s)://.../Type/id`` and conditional
  ``Type?params`` must name a resource type the element allows (``Reference(Any)`` allows all), and a
  relative or conditional reference must name an R4 resource type at all. ``#local``, ``urn:uuid:`` and
  ``urn:oid:`` references are left to reference resolution; absolute URLs whose second-to-last segment
  is not a resource type are not FHIR REST URLs and are not checked. A ``Reference.type`` that is a plain
  type name must be an allowed type too, and agree with the type in ``reference``.

Walking is driven by the keys present in the JSON; per-type tables are compiled on first use.
"""

from __future__ import annotations

import threading
from typing import Any

from app.fhir.definitions import (
    RESOURCE_TYPES,
    complex_types,
    element_defs,
    primitive_types,
    value_set_codes,
)
from app.fhir.errors import Issue

__all__ = ["check_resource"]

# handler kinds (first item of a handler tuple)
_CODE = 0  # (_CODE, allowed codes, value set text)
_COMPLEX = 1  # (_COMPLEX, child table)
_CODED = 2  # (_CODED, {system: codes}, value set text, child table, "coding" key or None for a Coding)
_REFERENCE = 3  # (_REFERENCE, allowed types or None, allowed text, child table)
_RESOURCE = 4  # (_RESOURCE,)

_SHOWN_CODES = 4

Table = dict[str, tuple[Any, ...]]
Path = tuple[Any, ...]  # (parent path, key) or (parent path, key, index); the root is (type name,)

_tables: dict[str, Table] = {}
_lock = threading.Lock()


def check_resource(resource: dict[str, Any], clean: frozenset[str] = frozenset()) -> list[Issue]:
    """Issues of a resource (code-invalid for required bindings, invalid for reference targets). `clean`: top-level
    keys whose elements are known to pass, not walked."""
    resource_type = resource.get("resourceType")
    if resource_type.__class__ is not str or resource_type not in RESOURCE_TYPES:
        return [Issue("invalid", f"{resource_type!r} is not a FHIR R4 resource type")]
    table = _tables.get(resource_type)
    if table is None:
        table = _table(resource_type)
    out: list[Issue] = []
    _walk({k: v for k, v in resource.items() if k not in clean} if clean else resource, table, (resource_type,), out)
    return out


# ---------------------------------------------------------------------------------------------- walking


def _walk(node: dict[str, Any], table: Table, path: Path, out: list[Issue]) -> None:
    for key, value in node.items():
        handler = table.get(key)
        if handler is None:
            continue
        if handler[0] == _CODE:  # the most frequent case, inlined
            if value.__class__ is str:
                if value not in handler[1]:
                    _code_issue(value, handler[2], (path, key), out)
            elif value.__class__ is list:
                for index, item in enumerate(value):
                    if item.__class__ is str and item not in handler[1]:
                        _code_issue(item, handler[2], (path, key, index), out)
        elif value.__class__ is dict:
            _check(handler, value, (path, key), out)
        elif value.__class__ is list:
            for index, item in enumerate(value):
                if item.__class__ is dict:
                    _check(handler, item, (path, key, index), out)


def _check(handler: tuple[Any, ...], value: dict[str, Any], path: Path, out: list[Issue]) -> None:
    kind = handler[0]
    if kind == _COMPLEX:
        _walk(value, handler[1], path, out)
    elif kind == _REFERENCE:
        _check_reference(value, handler, path, out)
        _walk(value, handler[3], path, out)
    elif kind == _CODED:
        _check_codings(value, handler, path, out)
        _walk(value, handler[3], path, out)
    else:  # _RESOURCE: contained resources, Bundle.entry.resource, Parameters.parameter.resource
        resource_type = value.get("resourceType")
        if resource_type.__class__ is str and resource_type in RESOURCE_TYPES:
            table = _tables.get(resource_type)
            if table is None:
                table = _table(resource_type)
            _walk(value, table, path, out)
        else:  # the R4B models accept a resource without one, and fail with a TypeError on a non-string
            _invalid(
                out,
                (path, "resourceType"),
                f"an embedded resource needs a resourceType naming a FHIR R4 resource type (got {resource_type!r})",
            )


def _check_codings(value: dict[str, Any], handler: tuple[Any, ...], path: Path, out: list[Issue]) -> None:
    systems: dict[str, frozenset[str]] = handler[1]
    coding_key: str | None = handler[4]
    if coding_key is None:  # a Coding
        codings: Any = (value,)
    else:  # a CodeableConcept
        codings = value.get(coding_key)
        if codings.__class__ is not list:
            return
    for index, coding in enumerate(codings):
        if coding.__class__ is not dict:
            continue
        codes = systems.get(coding.get("system"))  # type: ignore[arg-type]
        if codes is None:
            continue
        code = coding.get("code")
        if code.__class__ is str and code not in codes:
            where = (path, "code") if coding_key is None else ((path, coding_key, index), "code")
            _code_issue(code, handler[2], where, out)


def _check_reference(value: dict[str, Any], handler: tuple[Any, ...], path: Path, out: list[Issue]) -> None:
    allowed: frozenset[str] | None = handler[1]
    named: str | None = None
    ref = value.get("reference")
    if ref.__class__ is str and ref:
        named = _reference_type(ref)
        if named is not None:
            if named not in RESOURCE_TYPES:
                _invalid(out, path, f"{named!r} in reference {ref!r} is not a FHIR R4 resource type")
                named = None
            elif allowed is not None and named not in allowed:
                _invalid(out, path, f"reference {ref!r} targets {named}, not an allowed type ({handler[2]})")
    declared = value.get("type")
    if declared.__class__ is str and declared and ":" not in declared:
        if declared not in RESOURCE_TYPES:
            _invalid(out, (path, "type"), f"{declared!r} is not a FHIR R4 resource type")
        elif allowed is not None and declared not in allowed:
            _invalid(out, (path, "type"), f"{declared} is not an allowed target type ({handler[2]})")
        elif named is not None and named != declared:
            _invalid(out, (path, "type"), f"{declared} does not match reference {ref!r}")


def _invalid(out: list[Issue], path: Path, message: str) -> None:
    where = _render(path)
    out.append(Issue("invalid", f"{where}: {message}", (where,)))


def _reference_type(ref: str) -> str | None:
    """The resource type a literal reference names, or None when it is not a form checked here."""
    first = ref[0]
    if first == "#" or ref.startswith("urn:"):
        return None
    if "?" in ref:  # conditional reference: Type?params
        head = ref.partition("?")[0]
        return None if ("/" in head or ":" in head or not head) else head
    parts = ref.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        del parts[-2:]
    if "://" in ref:  # absolute: only FHIR REST URLs (…/Type/id) say something about the type
        if len(parts) >= 5 and parts[-2] in RESOURCE_TYPES:
            return parts[-2]
        return None
    if len(parts) == 2 and ":" not in ref:
        return parts[0]
    return None


def _code_issue(code: str, value_set: str, path: Path, out: list[Issue]) -> None:
    where = _render(path)
    message = f"{where}: {code!r} is not in the required value set {value_set}"
    out.append(Issue("code-invalid", message, (where,)))


def _render(path: Path) -> str:
    parts: list[str] = []
    while len(path) > 1:
        key = path[1]
        if key[0] == "_":  # primitive extension: `_status` is `status` in FHIRPath
            key = key[1:]
        parts.append(f".{key}[{path[2]}]" if len(path) == 3 else f".{key}")
        path = path[0]
    parts.append(path[0])
    return "".join(reversed(parts))


# ---------------------------------------------------------------------------------------------- compiling


def _table(type_name: str) -> Table:
    """The handler table of a type; compiles it (and every type reachable from it) on first use."""
    with _lock:
        table = _tables.get(type_name)
        if table is None:
            pending: dict[str, Table] = {}
            table = _compile(type_name, pending)
            _tables.update(pending)  # publish complete tables only
        return table


def _compile(type_name: str, pending: dict[str, Table]) -> Table:
    existing = _tables.get(type_name) or pending.get(type_name)
    if existing is not None:
        return existing
    table: Table = {}
    pending[type_name] = table
    complex_names = complex_types()
    primitives = primitive_types()
    for key, elem in element_defs(type_name).items():
        ftype = elem.fhir_type
        if ftype == "Resource":
            table[key] = (_RESOURCE,)
        elif ftype in complex_names:
            child = _compile(ftype, pending)
            systems = _bound_systems(elem.value_set) if ftype in ("Coding", "CodeableConcept") else None
            if ftype == "Reference":
                allowed = frozenset(elem.targets) if elem.targets else None
                table[key] = (_REFERENCE, allowed, "|".join(elem.targets), child)
            elif systems:
                assert elem.value_set is not None
                coding_key = "coding" if ftype == "CodeableConcept" else None
                table[key] = (_CODED, systems, _value_set_text(elem.value_set), child, coding_key)
            else:
                table[key] = (_COMPLEX, child)
        else:
            if ftype in primitives or ftype == "xhtml":
                table["_" + key] = (_COMPLEX, _compile("Element", pending))
            if ftype == "code" and elem.value_set is not None:
                systems = _bound_systems(elem.value_set)
                if systems:
                    codes = frozenset(c for cs in systems.values() for c in cs)
                    table[key] = (_CODE, codes, _value_set_text(elem.value_set))
    return table


def _bound_systems(value_set: str | None) -> dict[str, frozenset[str]] | None:
    if value_set is None:
        return None
    systems = value_set_codes(value_set)
    if systems is None:
        return None
    return {system: frozenset(codes) for system, codes in systems.items()}


def _value_set_text(value_set: str) -> str:
    systems = value_set_codes(value_set) or {}
    codes = [c for cs in systems.values() for c in cs]
    shown = ", ".join(codes[:_SHOWN_CODES]) + (", ..." if len(codes) > _SHOWN_CODES else "")
    return f"{value_set} ({shown})"
