"""Parsing and validating FHIR R4 JSON: the checks every resource passes before it is stored.

Two layers: the fhir.resources R4B models (structure, datatypes, cardinality) and
`conformance.check_resource` (required-binding codes, reference target types), which the models do
not enforce. Resources stay plain dicts afterwards: we store what the client sent (plus `id` and
`meta`), never the model's re-serialisation, which is slower and reorders elements.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
from pydantic import ValidationError

from app.fhir import conformance, element_memo
from app.fhir.definitions import resource_types
from app.fhir.errors import FhirError, Issue, bad_request, not_found, unprocessable
from app.fhir.invariants import check_invariants
from app.fhir.version import model_class

# Pydantic error types whose own message says nothing useful to a FHIR client.
_PLAIN_MESSAGES = {
    "json_invalid": "expected a JSON object here",
    "model_type": "expected a JSON object here",
    "dict_type": "expected a JSON object here",
    "list_type": "expected a JSON array here",
    "extra_forbidden": "unknown element: not defined for this type in FHIR R4",
    "missing": "required element is missing",
    "model_field_validation.missing": "required element is missing",
}


log = logging.getLogger("trialbridge.validation")

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def check_id(res_id: str, where: str) -> None:
    """A FHIR id: 1-64 of letters, digits, '-' and '.'."""
    if not _ID.fullmatch(res_id):
        raise bad_request(f"{res_id[:80]!r} is not a valid FHIR id (1-64 letters, digits, '-' or '.').", where)


def parse_json(body: bytes, what: str = "request body") -> Any:
    """Parse a JSON body; malformed JSON is a 400 naming the line and column."""
    if not body.strip():
        raise bad_request(f"The {what} is empty: send a FHIR JSON resource.", code="required")
    if b"\\u0000" in body:
        raise bad_request(
            f"The {what} contains a NUL character (\\u0000), which FHIR strings cannot hold.", code="structure"
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"The {what} is not valid JSON: {exc}", code="structure") from None


def require_resource_type(resource: Any, where: str = "") -> str:
    """The `resourceType` of a JSON object, checked against the R4 type list (404 when unknown)."""
    if not isinstance(resource, dict):
        raise bad_request("Expected a FHIR resource (a JSON object with resourceType).", where or None, "structure")
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise bad_request(
            "The resource has no resourceType: every FHIR resource names its type.",
            f"{where}.resourceType" if where else "resourceType",
            "required",
        )
    if resource_type not in resource_types():
        raise not_found(f"Unknown resource type {resource_type!r}: not a FHIR R4 resource type.")
    return resource_type


def _fhir_path(resource_type: str, loc: tuple[int | str, ...]) -> str:
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "resource_type":
            path += ".resourceType"
        else:
            path += f".{part}"
    return path


def issues_from_pydantic(resource_type: str, error: ValidationError) -> list[Issue]:
    issues = []
    for detail in error.errors(include_url=False):
        kind = str(detail.get("type", ""))
        message = _PLAIN_MESSAGES.get(kind) or str(detail.get("msg", "invalid value")).removeprefix("Value error, ")
        expression = _fhir_path(resource_type, tuple(detail.get("loc", ())))
        value = detail.get("input")
        shown = f" (got {value!r})" if isinstance(value, str | int | float | bool) and kind != "missing" else ""
        code = "required" if "missing" in kind else "structure" if kind in _PLAIN_MESSAGES else "value"
        issues.append(Issue(code, f"{expression}: {' '.join(message.split())}{shown}", (expression,)))
    return issues


def validate_resource(resource: Any, expected_type: str | None = None) -> str:
    """Validate one resource dict; returns its type or raises FhirError (422) listing every problem."""
    resource_type = require_resource_type(resource)
    if expected_type is not None and resource_type != expected_type:
        raise bad_request(f"The resource is a {resource_type} but the URL is for {expected_type}.", "resourceType")
    issues = model_issues(resource) or semantic_issues(resource)
    if issues:
        raise FhirError(422, issues)
    return resource_type


def semantic_issues(resource: dict[str, Any], clean: frozenset[str] = frozenset()) -> list[Issue]:
    """Checks for a structurally valid resource: required bindings, reference targets, invariants. `clean`: top-level
    keys whose elements are known to pass them where they stand (see `element_memo.Remembered`), not walked."""
    return conformance.check_resource(resource, clean) + check_invariants(resource, clean)


def model_issues(resource: dict[str, Any], memo: element_memo.ElementMemo = element_memo.MEMO) -> list[Issue]:
    """What the fhir.resources R4B model finds wrong (structure, datatypes, cardinality); [] when valid.

    The resource type must already be known (see `require_resource_type`). This is the expensive
    half of validation, and the part `ValidatorPool` runs in worker processes. `memo`: the complex elements
    validated before (an empty one validates every element).
    """
    return model_verdict(resource, memo)[0]


def model_verdict(
    resource: dict[str, Any], memo: element_memo.ElementMemo = element_memo.MEMO
) -> tuple[list[Issue], dict[str, element_memo.Remembered]]:
    """`model_issues`, and for a valid resource the remembered entries of its complex elements, by JSON key."""
    resource_type = resource["resourceType"]
    try:
        model = model_class(resource_type)
    except ValueError:  # 18 R4 types (the MedicinalProduct* and Substance* families, ...) have no R4B model
        issue = Issue(
            "not-supported",
            f"{resource_type} cannot be validated by this server (fhir.resources has "
            "no R4B model for it), so it is not accepted.",
            (resource_type,),
        )
        return [issue], {}
    try:  # the model's verdict; repeated elements validated once
        _, known = element_memo.validate_elements(model, resource, memo)
    except ValidationError as exc:
        return issues_from_pydantic(resource_type, exc), {}
    except (TypeError, KeyError):  # fhir_core fails this way on an embedded resource's bad resourceType
        found = conformance.check_resource(resource) + _contained_without_model(resource)
        if found:
            return found, {}
        log.exception("the R4B model of %s failed on a resource (answered 422)", resource_type)
        issue = Issue(
            "structure",
            f"{resource_type}: the FHIR R4 models cannot read this resource; check the types of its elements.",
            (resource_type,),
        )
        return [issue], {}
    return [], known


def _contained_without_model(resource: dict[str, Any]) -> list[Issue]:
    """Contained resources of the R4 types fhir.resources has no R4B model for (they crash the models)."""
    issues = []
    contained = resource.get("contained")
    for index, item in enumerate(contained if isinstance(contained, list) else ()):
        kind = item.get("resourceType") if isinstance(item, dict) else None
        if isinstance(kind, str):
            try:
                model_class(kind)
            except ValueError:
                where = f"{resource['resourceType']}.contained[{index}].resourceType"
                issues.append(Issue("not-supported", f"{where}: {kind} cannot be validated by this server.", (where,)))
    return issues


def validation_issues(resource: Any) -> list[Issue]:
    """Like `validate_resource`, but returns the issues instead of raising (for whole-bundle reports)."""
    try:
        validate_resource(resource)
    except FhirError as exc:
        return exc.issues
    return []


__all__ = [
    "model_issues",
    "model_verdict",
    "parse_json",
    "require_resource_type",
    "unprocessable",
    "validate_resource",
    "validation_issues",
]
