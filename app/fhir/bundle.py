"""Transaction and batch bundles (POST /fhir), processed as the FHIR R4 spec says.

Transaction: all or nothing, in one database transaction. Every entry is checked first and every
problem is reported at once (pointing at `Bundle.entry[i]...`); then identities are resolved
(`ifNoneExist`, conditional PUTs), `urn:uuid:` fullUrls and conditional references
(`Patient?identifier=sys|val`) are rewritten to real ids everywhere, and the entries run in the
spec's order: DELETE, POST, PUT, GET. Batch: each entry in its own transaction, each with its own
response or OperationOutcome.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

import orjson

from app.fhir import interactions
from app.fhir.definitions import resource_types
from app.fhir.errors import FhirError, Issue, bad_request, operation_outcome, precondition_failed
from app.fhir.interactions import InteractionResult
from app.fhir.references import BundleReferences, ReferenceSite, find_references, rewrite_references
from app.fhir.searchset import SearchContext, search_bundle
from app.fhir.validation import check_id, validation_issues
from app.fhir.validator_pool import INLINE, ValidatorPool
from app.store.repository import Store, StoredResource, WriteTransaction, fhir_instant, new_id, parse_etag
from app.store.search import canonical_condition, parse_search

log = logging.getLogger("trialbridge.bundle")

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
MAX_REPORTED_ISSUES = 100
WRITE_AT_LEAST = 100  # buffered creates written while verdicts are awaited (see `write_meanwhile`)


@dataclass
class BundleOptions:
    base_url: str
    prefer_return: str = "minimal"  # minimal | representation | OperationOutcome
    max_entries: int = 10_000
    default_count: int = 50
    max_count: int = 1000
    validator: ValidatorPool = INLINE
    # False only when the bundle is known to hold no conditional reference (`may_hold_conditional_references` on
    # the body as received): then new resources' references are resolved by the validation workers.
    conditional_references_possible: bool = True


@dataclass
class _Entry:
    index: int
    method: str
    url: str
    resource_type: str | None
    res_id: str | None
    query: str | None
    version: int | None
    resource: dict[str, Any] | None
    full_url: str | None
    if_none_exist: str | None
    if_match: int | None
    target_id: str | None = None  # the id this entry writes, once identities are resolved
    reuse_existing: bool = False  # a conditional create that matched: nothing to write

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"


def process(store: Store, bundle: Any, options: BundleOptions) -> dict[str, Any]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise bad_request("POST /fhir takes a Bundle of type transaction or batch.", "Bundle.resourceType")
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise bad_request(
            f"Bundle.type is {kind!r}; only transaction and batch bundles are processed here. "
            "To store a bundle as a document or collection, POST it to /fhir/Bundle.",
            "Bundle.type",
        )
    raw_entries = bundle.get("entry") or []
    if not isinstance(raw_entries, list):
        raise bad_request("Bundle.entry must be an array.", "Bundle.entry", "structure")
    if len(raw_entries) > options.max_entries:
        raise FhirError(
            413,
            [
                Issue(
                    "too-costly",
                    f"The bundle has {len(raw_entries)} entries; this server takes "
                    f"at most {options.max_entries} per bundle. Split it.",
                    ("Bundle.entry",),
                )
            ],
        )
    if kind == "batch":
        return _batch(store, raw_entries, options)
    return _transaction(store, raw_entries, options)


# ------------------------------------------------------------------------------------------- parsing


def _parse_entry(index: int, raw: Any, options: BundleOptions) -> _Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise bad_request("Each bundle entry must be a JSON object.", where, "structure")
    request = raw.get("request")
    if not isinstance(request, dict):
        raise bad_request(
            "The entry has no request: transaction and batch entries say what to do with "
            "request.method and request.url.",
            f"{where}.request",
            "required",
        )
    method = request.get("method")
    if not isinstance(method, str) or method not in _ORDER:
        raise bad_request(
            f"request.method {method!r} is not one of GET, HEAD, POST, PUT, PATCH, DELETE.",
            f"{where}.request.method",
            "value",
        )
    if method == "PATCH":
        raise FhirError(
            405,
            [
                Issue(
                    "not-supported",
                    "PATCH is not supported yet; send the whole resource with PUT.",
                    (f"{where}.request.method",),
                )
            ],
        )
    url = request.get("url")
    if not isinstance(url, str) or not url:
        raise bad_request("The entry has no request.url.", f"{where}.request.url", "required")
    path, query = _relative(url, options.base_url)
    segments = [s for s in path.split("/") if s]
    resource_type = segments[0] if segments else None
    if resource_type is None:
        raise bad_request(
            f"request.url {url!r} names no resource type (e.g. Patient, Patient/1, Patient?x=y).",
            f"{where}.request.url",
        )
    if resource_type is not None and resource_type not in resource_types():
        raise bad_request(
            f"request.url {url!r} does not start with a FHIR R4 resource type.", f"{where}.request.url", "not-supported"
        )
    res_id = segments[1] if len(segments) >= 2 and segments[1] != "_search" else None
    if res_id is not None:
        check_id(res_id, f"{where}.request.url")
    version = None
    if len(segments) == 4 and segments[2] == "_history" and re.fullmatch(r"[0-9]{1,9}", segments[3]):
        if method != "GET":
            raise bad_request(
                f"{method} cannot target a version ({url!r}); use {segments[0]}/{segments[1]}.", f"{where}.request.url"
            )
        version = int(segments[3])
    elif len(segments) > 2 or (len(segments) == 2 and res_id is None and method != "GET"):
        raise bad_request(f"request.url {url!r} is not a URL this entry's method can use.", f"{where}.request.url")

    resource = raw.get("resource")
    if method in ("POST", "PUT"):
        if not isinstance(resource, dict):
            raise bad_request(f"A {method} entry needs a resource.", f"{where}.resource", "required")
        if resource.get("resourceType") != resource_type:
            raise bad_request(
                f"The entry's resource is a {resource.get('resourceType')!r} but request.url {url!r} is for "
                f"{resource_type}.",
                f"{where}.resource.resourceType",
            )
        if method == "POST" and (res_id is not None or query):
            raise bad_request(
                "A POST entry's request.url is the bare resource type (e.g. 'Patient').", f"{where}.request.url"
            )
        if method == "PUT" and res_id is None and not query:
            raise bad_request(
                "A PUT entry's request.url is Type/id or a conditional Type?search.", f"{where}.request.url"
            )
    elif method == "DELETE" and res_id is None and not query:
        raise bad_request(
            "A DELETE entry's request.url is Type/id or a conditional Type?search.", f"{where}.request.url"
        )

    if_match = None
    if request.get("ifMatch") is not None:
        if_match = parse_etag(str(request["ifMatch"]))
        if if_match is None:
            raise bad_request(f'ifMatch {request["ifMatch"]!r} is not an ETag like W/"3".', f"{where}.request.ifMatch")
    for field_name in ("ifNoneExist", "ifMatch", "ifNoneMatch", "ifModifiedSince"):
        if request.get(field_name) is not None and not isinstance(request[field_name], str):
            raise bad_request(f"request.{field_name} must be a string.", f"{where}.request.{field_name}")
    full_url = raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None
    return _Entry(
        index,
        method,
        url,
        resource_type,
        res_id,
        query or None,
        version,
        resource if isinstance(resource, dict) else None,
        full_url,
        request.get("ifNoneExist") or None,
        if_match,
    )


def _relative(url: str, base_url: str) -> tuple[str, str]:
    """Split an entry URL into path (relative to the FHIR base) and query."""
    if "://" in url:
        parts = urlsplit(url)
        base_path = urlsplit(base_url).path.rstrip("/")
        path = parts.path[len(base_path) :] if parts.path.startswith(base_path) else parts.path
        return path.strip("/"), parts.query
    path, _, query = url.partition("?")
    return path.strip("/"), query


# --------------------------------------------------------------------------------------- transaction


def _transaction(store: Store, raw_entries: list[Any], options: BundleOptions) -> dict[str, Any]:
    entries = [_parse_entry(i, raw, options) for i, raw in enumerate(raw_entries)]
    _reject_duplicate_targets(entries)
    results: dict[int, dict[str, Any]] = {}
    # Without conditional references, a new resource's references need only the bundle's ids: they are resolved
    # where it is checked (in the validation workers), not here first.
    resolved_in_checks = not options.conditional_references_possible
    sites = {e.index: _sites(e) for e in entries if _writes(e) and not (resolved_in_checks and e.method == "POST")}
    with store.transaction() as tx:
        tx.lock_conditions(_conditions(entries, sites))
        id_map = _resolve_identities(tx, entries)
        tx.prefetch(
            (e.resource_type, e.target_id)
            for e in entries
            if e.method in ("PUT", "DELETE") and e.resource_type and e.target_id
        )
        resolver = _ReferenceResolver(tx, id_map, options.base_url)
        for entry_sites in sites.values():  # all before any write: a conditional reference sees the state before
            rewrite_references(entry_sites, resolver)
        ordered = sorted(entries, key=lambda e: _ORDER[e.method])
        writing = [e for e in ordered if _writes(e)]
        created: dict[int, StoredResource] = {}

        def prepared() -> Iterator[tuple[dict[str, Any], str | None]]:
            """Each resource to check, once final: when new, stamped as stored (the workers that check it then also
            extract its index rows, and resolve its references when they were left to them); the rest is checked
            as sent. Produced one by one, so that big bundles are checked chunk by chunk while the next chunk is
            stamped."""
            for e in writing:
                stamped = _stamped_if_new(tx, e)
                if stamped is None:
                    assert e.resource is not None
                    if e.index not in sites:  # left to the checks, which resolve only what they store
                        rewrite_references(_sites(e), resolver)
                    yield e.resource, None
                else:
                    created[e.index] = stamped
                    yield cast(dict[str, Any], stamped.content), e.target_id

        issues: list[Issue] = []
        unresolved: list[Issue] = []
        failure: Exception | None = None

        def write_meanwhile() -> None:
            """While the workers check the next resources: write the creates buffered so far (unless nothing will
            be written), so that little is left to write once the last verdict is in. At least a chunk's worth: each
            write is a statement per table (on PostgreSQL a COPY, with a round trip of its own)."""
            nonlocal failure
            if failure is None and tx.pending >= WRITE_AT_LEAST and not (resolver.issues or unresolved or issues):
                try:
                    tx.flush()
                except Exception as exc:  # reported after validation, as below
                    failure = exc

        checks = options.validator.check_each(
            prepared(),
            len(writing),
            sqlite=tx.sqlite,
            references=BundleReferences(id_map, options.base_url) if resolved_in_checks else None,
            while_waiting=write_meanwhile,
        )
        for entry in ordered:
            checked = next(checks) if _writes(entry) else None
            if checked is not None:
                issues.extend(i.under(f"{entry.where}.resource") for i in checked.issues)
                unresolved.extend(i.under(f"{entry.where}.resource") for i in checked.unresolved)
            if resolver.issues or unresolved or issues or failure is not None:
                continue  # nothing will be written: only the remaining checks are wanted, for the report
            try:
                if entry.index in created:
                    assert checked is not None
                    stored = tx.add_created(created[entry.index], checked.index, checked.content).stored
                    if resolved_in_checks and options.prefer_return == "representation" and checked.content:
                        stored = replace(stored, content=orjson.loads(checked.content))  # resolved by a worker
                    results[entry.index] = _response_entry(InteractionResult(201, stored), entry, options)
                else:
                    results[entry.index] = _response_entry(_execute(tx, entry, options), entry, options)
            except FhirError as exc:
                failure = _at_entry(exc, entry)
            except Exception as exc:  # reported after validation, which explains most failures
                failure = exc
        # in entry order, wherever they were found (PUT entries' here, new resources' in the checks)
        reference_issues = sorted(resolver.issues + unresolved, key=_entry_number)
        if reference_issues or issues:
            raise FhirError(_rejection_status(reference_issues), (reference_issues + issues)[:MAX_REPORTED_ISSUES])
        if failure is not None:
            raise failure
    return {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [results[i] for i in range(len(entries))],
    }


def _sites(entry: _Entry) -> list[ReferenceSite]:
    return find_references(entry.resource, f"{entry.where}.resource")


_ENTRY_NUMBER = re.compile(r"Bundle\.entry\[(\d+)\]")


def _entry_number(issue: Issue) -> int:
    """The entry an issue points at (its expressions start with `Bundle.entry[i]`), for reporting in entry order."""
    found = _ENTRY_NUMBER.match(issue.expression[0]) if issue.expression else None
    return int(found.group(1)) if found else -1


def _stamped_if_new(tx: WriteTransaction, e: _Entry) -> StoredResource | None:
    """A POST's new resource as it will be stored, or None: not a create, or content too malformed to stamp
    (checked as sent, which reports why)."""
    if e.method != "POST" or e.reuse_existing or not (e.resource_type and e.resource and e.target_id):
        return None
    if not isinstance(e.resource.get("meta", {}), dict):
        return None
    try:
        return tx.stamp_new(e.resource_type, e.resource, e.target_id)
    except (TypeError, ValueError, AttributeError):
        return None


def _writes(entry: _Entry) -> bool:
    """A POST or PUT: its resource is checked and written (or, for a matched ifNoneExist, only checked)."""
    return entry.method in ("POST", "PUT") and entry.resource is not None


def _conditions(entries: list[_Entry], sites: dict[int, list[ReferenceSite]]) -> list[tuple[str, str]]:
    """Every (type, condition) the bundle will search: ifNoneExist, conditional PUT/DELETE, conditional references."""
    found: list[tuple[str, str]] = []
    for entry in entries:
        if entry.resource_type is None:
            continue
        if entry.method == "POST" and entry.if_none_exist:
            found.append((entry.resource_type, entry.if_none_exist))
        elif entry.method in ("PUT", "DELETE") and entry.res_id is None and entry.query:
            found.append((entry.resource_type, entry.query))
        for holder, _ in sites.get(entry.index, ()):
            target, question, condition = holder["reference"].partition("?")
            if question and "/" not in target and target in resource_types():
                found.append((target, condition))
    return found


def _reject_duplicate_targets(entries: list[_Entry]) -> None:
    full_urls: dict[str, int] = {}
    for entry in entries:
        if entry.full_url is not None:
            if entry.full_url in full_urls:
                raise bad_request(
                    f"Entries {full_urls[entry.full_url]} and {entry.index} have the same fullUrl "
                    f"{entry.full_url!r}; references to it would be ambiguous.",
                    f"{entry.where}.fullUrl",
                )
            full_urls[entry.full_url] = entry.index
    seen: dict[tuple[str, str], int] = {}
    for entry in entries:
        if entry.method in ("PUT", "DELETE") and entry.res_id and entry.resource_type:
            key = (entry.resource_type, entry.res_id)
            if key in seen:
                raise bad_request(
                    f"Entries {seen[key]} and {entry.index} both write {key[0]}/{key[1]}; a transaction may touch "
                    "a resource only once.",
                    f"{entry.where}.request.url",
                )
            seen[key] = entry.index


def _resolve_identities(tx: WriteTransaction, entries: list[_Entry]) -> dict[str, str]:
    """Decide the id every POST/PUT entry will write, and map fullUrls to `Type/id`."""
    id_map: dict[str, str] = {}
    conditions: dict[tuple[str, str], str] = {}  # the same condition twice in one bundle is one resource
    for entry in sorted(entries, key=lambda e: _ORDER[e.method]):
        resource_type = entry.resource_type
        if resource_type is None or entry.method not in ("POST", "PUT"):
            continue
        condition = entry.if_none_exist if entry.method == "POST" else entry.query
        if entry.method == "PUT" and entry.res_id:
            entry.target_id = entry.res_id
        elif condition:
            key = (resource_type, canonical_condition(condition))
            if key in conditions:
                entry.target_id, entry.reuse_existing = conditions[key], entry.method == "POST"
            else:
                where = f"{entry.where}.request." + ("ifNoneExist" if entry.method == "POST" else "url")
                matches = interactions.match_condition(tx, resource_type, condition, where)
                if len(matches) > 1:
                    raise precondition_failed(
                        f"The condition {resource_type}?{condition} matches more than one resource; it must "
                        "match at most one.",
                        where,
                        code="multiple-matches",
                    )
                body_id = (entry.resource or {}).get("id") if entry.method == "PUT" else None
                if not matches and isinstance(body_id, str) and tx.is_current(resource_type, body_id):
                    raise interactions.exists_unmatched(resource_type, condition, body_id, where)
                entry.target_id = matches[0] if matches else (body_id or new_id())
                entry.reuse_existing = bool(matches) and entry.method == "POST"
                conditions[key] = entry.target_id
        else:
            entry.target_id = new_id()
        if entry.full_url:
            id_map[entry.full_url] = f"{resource_type}/{entry.target_id}"
    return id_map


class _ReferenceResolver:
    """Maps fullUrls to assigned ids and resolves conditional references; collects what fails."""

    def __init__(self, tx: WriteTransaction, id_map: dict[str, str], base_url: str) -> None:
        self.tx = tx
        self.local = BundleReferences(id_map, base_url)
        self.cache: dict[str, str | None] = {}
        self.issues: list[Issue] = []

    def __call__(self, reference: str, location: str) -> str | None:
        resolved, issue = self.local.resolve(reference, location)
        if issue is not None:
            self.issues.append(issue)
        conditional = None if resolved is not None or issue is not None else self.local.conditional(reference)
        if conditional is None:
            return resolved
        if conditional not in self.cache:
            self.cache[conditional] = self._conditional(conditional, location)
        return self.cache[conditional]

    def _conditional(self, reference: str, location: str) -> str | None:
        resource_type, _, condition = reference.partition("?")
        where = f"{location}.reference"
        if resource_type not in resource_types():
            self.issues.append(
                Issue(
                    "invalid", f"The conditional reference {reference!r} does not start with a resource type.", (where,)
                )
            )
            return None
        try:
            matches = interactions.match_condition(self.tx, resource_type, condition, where)
        except FhirError as exc:
            self.issues.extend(exc.issues)
            return None
        if len(matches) == 1:
            return f"{resource_type}/{matches[0]}"
        if not matches:
            self.issues.append(
                Issue(
                    "not-found",
                    f"The conditional reference {reference!r} matches no resource; it must match exactly one.",
                    (where,),
                )
            )
        else:
            self.issues.append(
                Issue(
                    "multiple-matches",
                    f"The conditional reference {reference!r} matches "
                    "more than one resource; it must match exactly one.",
                    (where,),
                )
            )
        return None


def _rejection_status(reference_issues: list[Issue]) -> int:
    """412 when a condition matched several resources, 400 for unresolvable references, else 422 (invalid)."""
    if any(i.code == "multiple-matches" for i in reference_issues):
        return 412
    return 400 if reference_issues else 422


def _at_entry(exc: FhirError, entry: _Entry) -> FhirError:
    issues = [i if i.expression else Issue(i.code, i.diagnostics, (entry.where,), i.severity) for i in exc.issues]
    return FhirError(exc.status, [i.under(f"{entry.where}.resource") for i in issues], exc.headers)


# ---------------------------------------------------------------------------------------- execution


def _execute(tx: WriteTransaction, entry: _Entry, options: BundleOptions) -> InteractionResult | dict[str, Any]:
    resource_type = entry.resource_type
    if entry.method == "GET" or entry.method == "HEAD":
        return _get(tx, entry, options)
    assert resource_type is not None
    if entry.method == "DELETE":
        if entry.res_id:
            return interactions.delete(tx, resource_type, entry.res_id, if_match=entry.if_match)
        return interactions.conditional_delete(tx, resource_type, entry.query or "")
    assert entry.resource is not None and entry.target_id is not None
    if entry.method == "POST":
        if entry.reuse_existing:
            return InteractionResult(200, tx.read(resource_type, entry.target_id))
        body = {k: v for k, v in entry.resource.items() if k != "id"}
        written = tx.create(resource_type, body, entry.target_id)
        return InteractionResult(201, written.stored)
    if entry.res_id:
        return interactions.update(tx, resource_type, entry.target_id, entry.resource, if_match=entry.if_match)
    result = tx.update(
        resource_type, entry.target_id, {**entry.resource, "id": entry.target_id}, if_match=entry.if_match
    )
    return InteractionResult(201 if result.created else 200, result.stored)


def _get(tx: WriteTransaction, entry: _Entry, options: BundleOptions) -> InteractionResult | dict[str, Any]:
    if entry.resource_type is None:
        raise bad_request(
            "GET entries read or search a resource type (e.g. Patient/1, Patient?name=x).", f"{entry.where}.request.url"
        )
    if entry.res_id is not None:
        if entry.version is not None:
            raise bad_request(
                "vread inside a bundle is not supported; read the current version.",
                f"{entry.where}.request.url",
                "not-supported",
            )
        return InteractionResult(200, tx.read(entry.resource_type, entry.res_id))
    pairs = parse_qsl(entry.query or "", keep_blank_values=True)
    request = parse_search(entry.resource_type, pairs, default_count=options.default_count, max_count=options.max_count)
    page = tx.search(request)
    return search_bundle(SearchContext(options.base_url, entry.resource_type, pairs), request, page)


def _response_entry(
    result: InteractionResult | dict[str, Any], entry: _Entry, options: BundleOptions
) -> dict[str, Any]:
    if isinstance(result, dict):  # a searchset from a GET entry
        return {"resource": result, "response": {"status": "200 OK"}}
    response: dict[str, Any] = {"status": result.status_line}
    out: dict[str, Any] = {}
    stored = result.stored
    if stored is not None:
        if not stored.deleted:
            out["fullUrl"] = f"{options.base_url.rstrip('/')}/{stored.resource_type}/{stored.id}"
            response["location"] = stored.location
        response["etag"] = stored.etag
        response["lastModified"] = fhir_instant(stored.last_updated)
        if stored.content is not None and (options.prefer_return == "representation" or entry.method == "GET"):
            out["resource"] = stored.content
    if result.issues or options.prefer_return == "OperationOutcome":
        response["outcome"] = operation_outcome(
            result.issues
            or [Issue("informational", f"{entry.method} {entry.url}: {result.status_line}", (), "information")]
        )
    out["response"] = response
    return out


# -------------------------------------------------------------------------------------------- batch


def _batch(store: Store, raw_entries: list[Any], options: BundleOptions) -> dict[str, Any]:
    responses = []
    for index, raw in enumerate(raw_entries):
        responses.append(_batch_entry(store, index, raw, options))
    return {"resourceType": "Bundle", "type": "batch-response", "entry": responses}


def _batch_entry(store: Store, index: int, raw: Any, options: BundleOptions) -> dict[str, Any]:
    entry: _Entry | None = None
    try:
        entry = _parse_entry(index, raw, options)
        with store.transaction() as tx:
            _resolve_identities(tx, [entry])
            if entry.resource is not None:
                resolver = _ReferenceResolver(tx, {}, options.base_url)
                prefix = f"{entry.where}.resource"
                rewrite_references(find_references(entry.resource, prefix), resolver)
                issues = [i.under(prefix) for i in validation_issues(entry.resource)]
                if resolver.issues or issues:
                    raise FhirError(_rejection_status(resolver.issues), resolver.issues + issues)
            try:
                return _response_entry(_execute(tx, entry, options), entry, options)
            except FhirError as exc:
                raise _at_entry(exc, entry) from None
    except FhirError as exc:
        return {"response": {"status": str(exc.status), "outcome": exc.outcome()}}
    except Exception:  # one entry's failure must not take down the others (already committed)
        incident = uuid.uuid4().hex[:12]
        log.exception("batch entry %d failed, incident %s", index, incident)
        outcome = operation_outcome(
            [Issue("exception", f"Internal error in this entry (incident {incident}).", (f"Bundle.entry[{index}]",))]
        )
        return {"response": {"status": "500", "outcome": outcome}}
