"""The FHIR REST service: each interaction in, a `FhirReply` (status, body, headers) out.

This is where HTTP semantics of FHIR live (ETag, Location, Prefer, conditional headers), but not the
web framework: the routes in `app.api.fhir` only read the request and hand over plain values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from app.fhir import bundle, interactions
from app.fhir.capability import capability_statement
from app.fhir.dates import date_range
from app.fhir.definitions import resource_types
from app.fhir.errors import FhirError, Issue, bad_request, not_found, not_supported, operation_outcome
from app.fhir.interactions import InteractionResult
from app.fhir.references import localize_references, may_hold_conditional_references
from app.fhir.searchset import SearchContext, history_bundle, search_bundle
from app.fhir.validation import check_id, parse_json, require_resource_type, validate_resource
from app.fhir.validator_pool import INLINE, ValidatorPool
from app.store.repository import ResourceVersion, SearchPage, Store, parse_etag
from app.store.search import parse_search


@dataclass
class FhirReply:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    serialized: bytes | None = None  # the body as stored JSON, when it need not be parsed at all


@dataclass(frozen=True)
class Limits:
    max_bundle_entries: int = 10_000
    default_page_size: int = 50
    max_page_size: int = 1_000


def _version_headers(stored: ResourceVersion, base_url: str, *, location: bool = False) -> dict[str, str]:
    headers = {"ETag": stored.etag, "Last-Modified": format_datetime(stored.last_updated, usegmt=True)}
    if location:
        headers["Location"] = f"{base_url.rstrip('/')}/{stored.location}"
    return headers


def _if_match(value: str | None) -> int | None:
    if value is None:
        return None
    version = parse_etag(value)
    if version is None:
        raise bad_request(f'If-Match {value!r} is not an ETag like W/"3".', "If-Match")
    return version


def _check_type(resource_type: str, res_id: str | None = None) -> None:
    if resource_type not in resource_types():
        raise not_found(f"Unknown resource type {resource_type!r}: not a FHIR R4 resource type.")
    if res_id is not None:
        check_id(res_id, f"{resource_type}.id")


class FhirService:
    def __init__(self, store: Store, limits: Limits | None = None, validator: ValidatorPool = INLINE) -> None:
        self.store = store
        self.limits = limits or Limits()
        self.validator = validator

    # ------------------------------------------------------------------------------------------ reads

    def capabilities(self, base_url: str) -> FhirReply:
        return FhirReply(200, capability_statement(base_url))

    def read(self, resource_type: str, res_id: str, base_url: str, if_none_match: str | None = None) -> FhirReply:
        _check_type(resource_type, res_id)
        stored = self.store.read_serialized(resource_type, res_id)
        headers = _version_headers(stored, base_url)
        if if_none_match is not None and parse_etag(if_none_match) == stored.version_id:
            return FhirReply(304, None, headers)
        return FhirReply(200, None, headers, serialized=stored.json)

    def vread(self, resource_type: str, res_id: str, version: str, base_url: str) -> FhirReply:
        _check_type(resource_type, res_id)
        if not re.fullmatch(r"[0-9]{1,9}", version):
            raise not_found(f"Version {version!r} of {resource_type}/{res_id}: versions are whole numbers.")
        stored = self.store.vread(resource_type, res_id, int(version))
        return FhirReply(200, stored.content, _version_headers(stored, base_url))

    def search(
        self, resource_type: str, params: list[tuple[str, str]], base_url: str, *, lenient: bool = False
    ) -> FhirReply:
        _check_type(resource_type)
        request = parse_search(
            resource_type,
            params,
            lenient=lenient,
            default_count=self.limits.default_page_size,
            max_count=self.limits.max_page_size,
        )
        page = self.store.search(request)
        return FhirReply(200, search_bundle(SearchContext(base_url, resource_type, params), request, page))

    def history(
        self, resource_type: str | None, res_id: str | None, params: list[tuple[str, str]], base_url: str
    ) -> FhirReply:
        if resource_type is not None:
            _check_type(resource_type)
        since: datetime | None = None
        count, offset = self.limits.default_page_size, 0
        for name, value in params:
            if name == "_since":
                bounds = date_range(value)
                if bounds is None or "T" not in value:
                    raise bad_request(f"_since must be an instant like 2024-03-01T00:00:00Z; got {value!r}.", "_since")
                since = bounds[0]
            elif name in ("_count", "_offset"):
                if not re.fullmatch(r"[0-9]{1,9}", value):
                    raise bad_request(f"{name} must be a non-negative whole number.", name)
                if name == "_count":
                    count = min(int(value), self.limits.max_page_size)
                else:
                    offset = int(value)
            elif name not in ("_format", "_pretty"):
                raise not_supported(f"History does not support the parameter {name!r} (only _since, _count).", name)
        versions, total = self.store.history(resource_type, res_id, since=since, count=count, offset=offset)
        path = "/".join(p for p in (resource_type, res_id, "_history") if p)
        return FhirReply(200, history_bundle(SearchContext(base_url, path, params), versions, total, offset, count))

    def everything(self, patient_id: str, params: list[tuple[str, str]], base_url: str) -> FhirReply:
        """Patient/{id}/$everything: the Patient and every resource in its compartment."""
        types: list[str] = []
        for name, value in params:
            if name == "_type":
                types.extend(t for t in value.split(",") if t)
                for resource_type in types:
                    _check_type(resource_type)
            elif name not in ("_format", "_pretty"):
                raise not_supported(f"$everything does not support the parameter {name!r} (only _type).", name)
        resources = self.store.compartment(patient_id, types or None)
        request = parse_search("Patient", [])
        request.count = None
        page = SearchPage(resources, len(resources))
        context = SearchContext(base_url, f"Patient/{patient_id}/$everything", params)
        return FhirReply(200, search_bundle(context, request, page))

    # ----------------------------------------------------------------------------------------- writes

    def _body(self, raw: bytes, resource_type: str, base_url: str) -> dict[str, Any]:
        resource = parse_json(raw)
        localize_references(resource, base_url)
        validate_resource(resource, expected_type=resource_type)
        assert isinstance(resource, dict)
        return resource

    def _write_reply(self, result: InteractionResult, base_url: str, prefer: str | None) -> FhirReply:
        stored = result.stored
        headers = _version_headers(stored, base_url, location=result.status == 201) if stored else {}
        if stored is not None and stored.deleted:
            headers.pop("Location", None)
        if prefer == "minimal" or result.status == 204:
            body = None if not result.issues else operation_outcome(result.issues)
            return FhirReply(200 if body is not None else result.status, body, headers)
        if prefer == "OperationOutcome":
            return FhirReply(
                result.status,
                operation_outcome(
                    result.issues
                    or [
                        Issue(
                            "informational",
                            f"{result.status_line}: {stored.location if stored else ''}",
                            (),
                            "information",
                        )
                    ]
                ),
                headers,
            )
        return FhirReply(result.status, stored.content if stored else None, headers)

    def create(
        self,
        resource_type: str,
        raw: bytes,
        base_url: str,
        *,
        if_none_exist: str | None,
        prefer: str | None,
        params: list[tuple[str, str]] | None = None,
    ) -> FhirReply:
        _check_type(resource_type)
        conditions = [name for name, _ in params or [] if name not in ("_format", "_pretty")]
        if conditions:
            # Some clients (fhirpy's get_or_create) send a conditional create as query parameters; R4 defines
            # only the If-None-Exist header. Ignoring them would silently create duplicates.
            raise bad_request(
                f"POST {resource_type} takes no search parameters ({', '.join(conditions)}); for a conditional "
                "create send them in the If-None-Exist header.",
                conditions[0],
            )
        resource = self._body(raw, resource_type, base_url)
        with self.store.transaction() as tx:
            result = interactions.create(tx, resource_type, resource, if_none_exist=if_none_exist)
        return self._write_reply(result, base_url, prefer)

    def update(
        self, resource_type: str, res_id: str, raw: bytes, base_url: str, *, if_match: str | None, prefer: str | None
    ) -> FhirReply:
        _check_type(resource_type, res_id)
        resource = self._body(raw, resource_type, base_url)
        with self.store.transaction() as tx:
            result = interactions.update(tx, resource_type, res_id, resource, if_match=_if_match(if_match))
        return self._write_reply(result, base_url, prefer)

    def conditional_update(
        self, resource_type: str, query: str, raw: bytes, base_url: str, *, if_match: str | None, prefer: str | None
    ) -> FhirReply:
        _check_type(resource_type)
        resource = self._body(raw, resource_type, base_url)
        with self.store.transaction() as tx:
            result = interactions.conditional_update(tx, resource_type, query, resource, if_match=_if_match(if_match))
        return self._write_reply(result, base_url, prefer)

    def delete(self, resource_type: str, res_id: str, base_url: str, *, if_match: str | None) -> FhirReply:
        _check_type(resource_type, res_id)
        with self.store.transaction() as tx:
            result = interactions.delete(tx, resource_type, res_id, if_match=_if_match(if_match))
        return self._write_reply(result, base_url, None)

    def conditional_delete(self, resource_type: str, query: str, base_url: str) -> FhirReply:
        _check_type(resource_type)
        if not query:
            raise bad_request("DELETE on a resource type needs a search condition (e.g. ?identifier=sys|val).")
        with self.store.transaction() as tx:
            result = interactions.conditional_delete(tx, resource_type, query)
        return self._write_reply(result, base_url, None)

    def process_bundle(self, raw: bytes, base_url: str, *, prefer: str | None) -> FhirReply:
        document = parse_json(raw)
        require_resource_type(document)
        options = bundle.BundleOptions(
            base_url=base_url,
            prefer_return=prefer or "minimal",
            max_entries=self.limits.max_bundle_entries,
            default_count=self.limits.default_page_size,
            max_count=self.limits.max_page_size,
            validator=self.validator,
            conditional_references_possible=may_hold_conditional_references(raw),
        )
        return FhirReply(200, bundle.process(self.store, document, options))


__all__ = ["FhirError", "FhirReply", "FhirService", "Limits"]
