"""FHIR JSON responses and content negotiation (Accept, _format)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from app.fhir.definitions import resource_types
from app.fhir.errors import FhirError, Issue
from app.fhir.r5 import R5_TYPES, R5Context, convertible, not_accepted_as_r5, not_in_r5, to_r4, to_r5
from app.fhir.rest import FhirReply
from app.fhir.validation import parse_json
from app.fhir.version import FHIR_CONTENT_TYPE, R5_CONTENT_TYPE
from app.mapping.study_fhir import r5_definition, study_arms

_ACCEPTED = ("application/fhir+json", "application/json", "application/json+fhir", "*/*", "application/*", "")
_FORMATS = ("json", "application/json", "application/fhir+json", "application/json+fhir")


def _fhir_version(header: str) -> str | None:
    """The fhirVersion parameter of a media type (`application/fhir+json; fhirVersion=5.0`), if any."""
    for param in header.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "fhirversion":
            return value.strip().strip('"')
    return None


async def negotiate(request: Request) -> None:
    """Refuse (406) a client that wants only what we do not produce (XML, Turtle, FHIR versions other than
    R4 and the R5 views), and note the FHIR version the reply is written in (`request.state.fhir_version`)."""
    request.state.fhir_version = "4.0"
    requested = request.query_params.get("_format")
    if requested is not None and requested.split(";")[0].strip() not in _FORMATS:
        raise FhirError(
            406,
            [
                Issue(
                    "not-supported",
                    f"_format={requested} is not available: this server speaks FHIR JSON only (_format=json).",
                    ("_format",),
                )
            ],
        )
    accept = request.headers.get("accept", "")
    # Without a version preference, answer in the version the client wrote in.
    written = "5.0" if (_fhir_version(request.headers.get("content-type", "")) or "").startswith("5.0") else "4.0"
    if requested is not None or not accept:
        request.state.fhir_version = written
        if written == "5.0":
            _refuse_types_without_r5_view(request, written)
        return
    for item in accept.split(","):
        media = item.split(";", 1)[0].strip()
        if media.lower() not in _ACCEPTED:
            continue
        version = _fhir_version(item) or written
        if version.startswith("4.0"):
            return
        if version.startswith("5.0"):
            request.state.fhir_version = "5.0"
            _refuse_types_without_r5_view(request, written)
            return
    raise FhirError(
        406,
        [
            Issue(
                "not-supported",
                f"Accept {accept!r} asks for a format or FHIR version this server does not produce; it serves "
                "FHIR R4 (fhirVersion=4.0) as application/fhir+json, and R5 views (fhirVersion=5.0) of "
                f"{', '.join(sorted(R5_TYPES))}.",
                ("Accept",),
            )
        ],
    )


def _refuse_types_without_r5_view(request: Request, written: str) -> None:
    # Before the work is done: a search of Patients cannot be answered in R5, even when it finds nothing,
    # and a Patient written as R5 cannot be read (415, as for the body's media type).
    segments = request.url.path.split("/fhir/", 1)[-1].split("/")
    if segments[0] in resource_types() and not convertible(segments[0]):
        raise not_accepted_as_r5(segments[0]) if written == "5.0" else not_in_r5(segments[0])


def r5_context(request: Request) -> R5Context:
    store = request.app.state.store
    return R5Context(study_arms=lambda reference: study_arms(store, reference), expression_definition=r5_definition)


def fhir_response(
    body: dict[str, Any] | None, status: int = 200, headers: dict[str, str] | None = None, pretty: bool = False
) -> Response:
    if body is None:
        return Response(status_code=status, headers=headers)
    content = orjson.dumps(body, option=orjson.OPT_INDENT_2 if pretty else 0)
    return Response(content, status_code=status, headers=headers, media_type=FHIR_CONTENT_TYPE)


def reply(request: Request, result: FhirReply) -> Response:
    pretty = request.query_params.get("_pretty") == "true"
    if getattr(request.state, "fhir_version", "4.0") == "5.0" and result.status < 300:
        body = orjson.loads(result.serialized) if result.serialized is not None else result.body
        if body is None:
            return Response(status_code=result.status, headers=result.headers)
        content = orjson.dumps(to_r5(body, r5_context(request)), option=orjson.OPT_INDENT_2 if pretty else 0)
        return Response(content, status_code=result.status, headers=result.headers, media_type=R5_CONTENT_TYPE)
    if result.serialized is not None:
        if not pretty:
            return Response(
                result.serialized, status_code=result.status, headers=result.headers, media_type=FHIR_CONTENT_TYPE
            )
        return fhir_response(orjson.loads(result.serialized), result.status, result.headers, pretty)
    return fhir_response(result.body, result.status, result.headers, pretty)


def r4_body(request: Request, body: bytes) -> bytes:
    """The request body as R4: an R5 resource (Content-Type fhirVersion=5.0) is validated and converted."""
    if not (_fhir_version(request.headers.get("content-type", "")) or "").startswith("5.0"):
        return body
    resource = parse_json(body)
    if not isinstance(resource, dict):
        raise FhirError(400, [Issue("structure", "Expected a FHIR resource (a JSON object with resourceType).")])
    return orjson.dumps(to_r4(resource, r5_context(request)))
