"""Bundles the server returns: searchset (search results) and history."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from app.fhir.errors import operation_outcome
from app.store.repository import SearchPage, StoredResource, fhir_instant
from app.store.search import SearchRequest

_ALWAYS_KEPT = ("resourceType", "id", "meta")


@dataclass(frozen=True)
class SearchContext:
    base_url: str  # the FHIR base, e.g. http://127.0.0.1:8000/fhir
    path: str  # what was searched, relative to the base: "Patient", "Patient/1/_history"
    params: list[tuple[str, str]]


def _page_url(context: SearchContext, offset: int | None, count: int | None, page: str | None = None) -> str:
    kept = [(k, v) for k, v in context.params if k not in ("_offset", "_count", "_page")]
    if count is not None:
        kept.append(("_count", str(count)))
    if offset:
        kept.append(("_offset", str(offset)))  # the position, for the previous link and for people reading it
    if page:
        kept.append(("_page", page))
    query = urlencode(kept, safe="|,:/")
    return f"{context.base_url.rstrip('/')}/{context.path}" + (f"?{query}" if query else "")


def _links(
    context: SearchContext,
    offset: int,
    count: int | None,
    shown: int,
    total: int | None,
    next_page: str | None = None,
    this_page: str | None = None,
) -> list[dict[str, str]]:
    """self, next and previous. `next_page` (a keyset token) makes next start right after this page's last
    row whatever changed meanwhile; previous goes back by position."""
    links = [{"relation": "self", "url": _page_url(context, offset, count, this_page)}]
    if count:
        more = (offset + shown < total) if total is not None else shown == count
        if more:
            links.append({"relation": "next", "url": _page_url(context, offset + count, count, next_page)})
        if offset > 0:
            links.append({"relation": "previous", "url": _page_url(context, max(offset - count, 0), count)})
    return links


def _subset(content: dict[str, Any], request: SearchRequest) -> dict[str, Any]:
    if request.elements:
        wanted = set(request.elements)
        subset = {k: v for k, v in content.items() if k in _ALWAYS_KEPT or k in wanted}
    elif request.summary == "data":
        subset = {k: v for k, v in content.items() if k != "text"}
    else:
        return content
    meta = dict(subset.get("meta") or {})
    meta["tag"] = [
        *meta.get("tag", []),
        {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
            "code": "SUBSETTED",
            "display": "subsetted",
        },
    ]
    subset["meta"] = meta
    return subset


def _entry(base_url: str, stored: StoredResource, mode: str, request: SearchRequest) -> dict[str, Any]:
    assert stored.content is not None
    return {
        "fullUrl": f"{base_url.rstrip('/')}/{stored.resource_type}/{stored.id}",
        "resource": _subset(stored.content, request),
        "search": {"mode": mode},
    }


def search_bundle(context: SearchContext, request: SearchRequest, page: SearchPage) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if page.total is not None:
        bundle["total"] = page.total
    bundle["link"] = _links(
        context, request.offset, request.count, len(page.resources), page.total, page.next_page, request.page_token
    )
    entries = [_entry(context.base_url, r, "match", request) for r in page.resources]
    entries += [_entry(context.base_url, r, "include", request) for r in page.included]
    if request.ignored:
        entries.append({"resource": operation_outcome(request.ignored), "search": {"mode": "outcome"}})
    if entries:
        bundle["entry"] = entries
    return bundle


def history_bundle(
    context: SearchContext, versions: list[StoredResource], total: int, offset: int, count: int
) -> dict[str, Any]:
    entries = []
    for stored in versions:
        entry: dict[str, Any] = {"fullUrl": f"{context.base_url.rstrip('/')}/{stored.resource_type}/{stored.id}"}
        if stored.content is not None:
            entry["resource"] = stored.content
        method = stored.method
        entry["request"] = {
            "method": method,
            "url": stored.resource_type if method == "POST" else f"{stored.resource_type}/{stored.id}",
        }
        entry["response"] = {
            "status": "201 Created" if method == "POST" else "204 No Content" if method == "DELETE" else "200 OK",
            "etag": stored.etag,
            "lastModified": fhir_instant(stored.last_updated),
        }
        entries.append(entry)
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "history",
        "total": total,
        "link": _links(context, offset, count, len(versions), total),
    }
    if entries:
        bundle["entry"] = entries
    return bundle
