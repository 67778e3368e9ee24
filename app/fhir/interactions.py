"""The FHIR RESTful interactions as plain functions over a write transaction.

Shared by the HTTP routes and the bundle processor, so that a `POST /fhir/Patient` and a POST entry
in a transaction bundle follow exactly the same rules. Nothing here knows about HTTP frameworks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.fhir.errors import Issue, bad_request, conflict, precondition_failed
from app.store.repository import StoredResource, WriteResult, WriteTransaction
from app.store.search import conditional_request

STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content", 304: "304 Not Modified"}


@dataclass
class InteractionResult:
    """What an interaction did: the HTTP status and the resource version it produced or found."""

    status: int
    stored: StoredResource | None = None
    issues: list[Issue] = field(default_factory=list)  # informational outcome (e.g. "nothing to delete")

    @property
    def status_line(self) -> str:
        return STATUS_TEXT.get(self.status, str(self.status))


def _from_write(result: WriteResult) -> InteractionResult:
    return InteractionResult(201 if result.created else 200, result.stored)


def match_condition(tx: WriteTransaction, resource_type: str, condition: str, where: str) -> list[str]:
    """Ids of the current resources matching a conditional query, under a lock on that condition."""
    request = conditional_request(resource_type, condition, where=where)
    request.count = 2  # none, one, or "several": nothing more is needed
    tx.lock_conditions([(resource_type, condition)])
    page = tx.search(request)
    return [r.id for r in page.resources]


def create(
    tx: WriteTransaction,
    resource_type: str,
    resource: dict[str, Any],
    *,
    if_none_exist: str | None = None,
) -> InteractionResult:
    """Create (server-assigned id; a client `id` is ignored as the spec says), or conditional create."""
    if if_none_exist:
        matches = match_condition(tx, resource_type, if_none_exist, "If-None-Exist")
        if len(matches) > 1:
            raise _multiple(resource_type, if_none_exist, "If-None-Exist")
        if matches:
            return InteractionResult(200, tx.read(resource_type, matches[0]))
    body = {k: v for k, v in resource.items() if k != "id"}
    return _from_write(tx.create(resource_type, body))


def update(
    tx: WriteTransaction, resource_type: str, res_id: str, resource: dict[str, Any], *, if_match: int | None = None
) -> InteractionResult:
    body_id = resource.get("id")
    if body_id is None:
        raise bad_request(
            f"The resource has no id: an update to {resource_type}/{res_id} must carry id {res_id!r}.",
            f"{resource_type}.id",
            "required",
        )
    if body_id != res_id:
        raise bad_request(
            f"The resource id {body_id!r} does not match the id {res_id!r} in the URL.", f"{resource_type}.id"
        )
    return _from_write(tx.update(resource_type, res_id, resource, if_match=if_match))


def conditional_update(
    tx: WriteTransaction, resource_type: str, condition: str, resource: dict[str, Any], *, if_match: int | None = None
) -> InteractionResult:
    """PUT Type?query: no match creates, one match updates it, several is 412."""
    matches = match_condition(tx, resource_type, condition, f"{resource_type}?{condition}")
    if len(matches) > 1:
        raise _multiple(resource_type, condition, f"{resource_type}?{condition}")
    body_id = resource.get("id")
    if matches:
        if body_id is not None and body_id != matches[0]:
            raise bad_request(
                f"The condition matches {resource_type}/{matches[0]} but the resource says id {body_id!r}.",
                f"{resource_type}.id",
            )
        return _from_write(tx.update(resource_type, matches[0], {**resource, "id": matches[0]}, if_match=if_match))
    if body_id is not None:
        if tx.is_current(resource_type, body_id):
            raise exists_unmatched(resource_type, condition, body_id, f"{resource_type}.id")
        return _from_write(tx.update(resource_type, body_id, resource))
    return _from_write(tx.create(resource_type, resource))


def exists_unmatched(resource_type: str, condition: str, res_id: str, where: str) -> Exception:
    return conflict(
        f"No {resource_type} matches {condition!r}, but the resource names id {res_id!r}, which exists and does "
        "not match: a conditional update must not overwrite it. Drop the id, or fix the condition.",
        where,
    )


def delete(tx: WriteTransaction, resource_type: str, res_id: str, *, if_match: int | None = None) -> InteractionResult:
    tombstone = tx.delete(resource_type, res_id, if_match=if_match)
    if tombstone is None:
        return InteractionResult(
            204,
            None,
            [Issue("not-found", f"{resource_type}/{res_id} did not exist; nothing to delete.", (), "information")],
        )
    return InteractionResult(204, tombstone)


def conditional_delete(tx: WriteTransaction, resource_type: str, condition: str) -> InteractionResult:
    matches = match_condition(tx, resource_type, condition, f"{resource_type}?{condition}")
    if len(matches) > 1:
        raise _multiple(resource_type, condition, f"{resource_type}?{condition}")
    if not matches:
        return InteractionResult(
            204,
            None,
            [Issue("not-found", f"No {resource_type} matches {condition!r}; nothing to delete.", (), "information")],
        )
    return delete(tx, resource_type, matches[0])


def _multiple(resource_type: str, condition: str, where: str) -> Exception:
    return precondition_failed(
        f"The condition {resource_type}?{condition} matches more than one resource; it must match at most one. "
        "Make the condition more specific (e.g. an identifier with its system).",
        where,
        code="multiple-matches",
    )
