"""FHIR JSON responses and content negotiation (Accept, _format)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from app.fhir.errors import FhirError, Issue
from app.fhir.rest import FhirReply
from app.fhir.version import FHIR_CONTENT_TYPE

_ACCEPTED = ("application/fhir+json", "application/json", "application/json+fhir", "*/*", "application/*", "")
_FORMATS = ("json", "application/json", "application/fhir+json", "application/json+fhir")


async def negotiate(request: Request) -> None:
    """Refuse (406) a client that wants only what we do not produce (XML, Turtle, other FHIR versions)."""
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
    if requested is not None or not accept:
        return
    for item in accept.split(","):
        media, *params = (p.strip() for p in item.split(";"))
        if media.lower() not in _ACCEPTED:
            continue
        version = next((p.split("=", 1)[1] for p in params if p.lower().startswith("fhirversion=")), None)
        if version is None or version.startswith("4.0"):
            return
    raise FhirError(
        406,
        [
            Issue(
                "not-supported",
                f"Accept {accept!r} asks for a format or FHIR version this server "
                "does not produce; it serves FHIR R4 (4.0) as application/fhir+json.",
                ("Accept",),
            )
        ],
    )


def fhir_response(
    body: dict[str, Any] | None, status: int = 200, headers: dict[str, str] | None = None, pretty: bool = False
) -> Response:
    if body is None:
        return Response(status_code=status, headers=headers)
    content = orjson.dumps(body, option=orjson.OPT_INDENT_2 if pretty else 0)
    return Response(content, status_code=status, headers=headers, media_type=FHIR_CONTENT_TYPE)


def reply(request: Request, result: FhirReply) -> Response:
    pretty = request.query_params.get("_pretty") == "true"
    if result.serialized is not None:
        if not pretty:
            return Response(
                result.serialized, status_code=result.status, headers=result.headers, media_type=FHIR_CONTENT_TYPE
            )
        return fhir_response(orjson.loads(result.serialized), result.status, result.headers, pretty)
    return fhir_response(result.body, result.status, result.headers, pretty)
