"""Errors as FHIR OperationOutcomes: one exception family, turned into responses by the API layer.

`issue.code` always comes from the FHIR issue-type value set
(https://hl7.org/fhir/R4/valueset-issue-type.html); `expression` points at the offending element
in FHIRPath form, e.g. ``Bundle.entry[3].resource.valueQuantity.value``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue."""

    code: str
    diagnostics: str
    expression: tuple[str, ...] = ()
    severity: str = "error"

    def to_fhir(self) -> dict[str, Any]:
        issue: dict[str, Any] = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue

    def under(self, prefix: str) -> Issue:
        """The same issue with every expression re-rooted below `prefix` (e.g. a bundle entry)."""
        return Issue(self.code, self.diagnostics, tuple(reroot(e, prefix) for e in self.expression), self.severity)


def reroot(expression: str, prefix: str) -> str:
    """`Observation.status` below `Bundle.entry[3].resource` is `Bundle.entry[3].resource.status`."""
    if expression.startswith("Bundle."):  # already rooted at the bundle
        return expression
    head, dot, rest = expression.partition(".")
    if head[:1].isupper():  # starts with a resource type name: drop it, the prefix names the place
        return f"{prefix}.{rest}" if dot else prefix
    return f"{prefix}.{expression}"


def operation_outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


@dataclass
class FhirError(Exception):
    """A request that cannot be honoured; `status` is the HTTP status, `issues` the outcome."""

    status: int
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        Exception.__init__(self, "; ".join(i.diagnostics for i in self.issues))

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


def _error(status: int, code: str, diagnostics: str, expression: Sequence[str] | str | None) -> FhirError:
    if expression is None:
        expr: tuple[str, ...] = ()
    elif isinstance(expression, str):
        expr = (expression,)
    else:
        expr = tuple(expression)
    return FhirError(status, [Issue(code, diagnostics, expr)])


def bad_request(diagnostics: str, expression: Sequence[str] | str | None = None, code: str = "invalid") -> FhirError:
    return _error(400, code, diagnostics, expression)


def unprocessable(diagnostics: str, expression: Sequence[str] | str | None = None, code: str = "invalid") -> FhirError:
    return _error(422, code, diagnostics, expression)


def not_found(diagnostics: str, expression: Sequence[str] | str | None = None) -> FhirError:
    return _error(404, "not-found", diagnostics, expression)


def gone(diagnostics: str) -> FhirError:
    return _error(410, "deleted", diagnostics, None)


def conflict(diagnostics: str, expression: Sequence[str] | str | None = None) -> FhirError:
    return _error(409, "conflict", diagnostics, expression)


def precondition_failed(
    diagnostics: str, expression: Sequence[str] | str | None = None, code: str = "conflict"
) -> FhirError:
    return _error(412, code, diagnostics, expression)


def not_supported(diagnostics: str, expression: Sequence[str] | str | None = None, status: int = 400) -> FhirError:
    return _error(status, "not-supported", diagnostics, expression)
