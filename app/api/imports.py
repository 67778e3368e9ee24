"""POST /api/imports/{spec}: a CSV source file (text/csv, or multipart/form-data with a `file` part) imported
through its spec in one transaction; `?dry-run=true` checks it without writing. 200 with a JSON summary, or
an OperationOutcome: 422 (bad rows, listed together), 404 (unknown spec), 415 (wrong content type)."""

from __future__ import annotations

from email import policy
from email.parser import BytesParser
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.fhir.errors import FhirError, Issue, bad_request, not_found
from app.mapping.imports import run_import
from app.mapping.sources import SourceRegistry

router = APIRouter(prefix="/api/imports", tags=["CSV imports"])

_CSV_TYPES = ("text/csv", "application/csv")


@router.post("/{spec}")
async def import_csv(
    spec: str, request: Request, dry_run: Annotated[bool, Query(alias="dry-run")] = False
) -> JSONResponse:
    sources: SourceRegistry = request.app.state.sources
    source = sources.get(spec)
    if source is None:
        raise not_found(f"No CSV source spec {spec!r}; the specs are: {', '.join(sources.kinds())}.")
    data = _csv_payload(request.headers.get("content-type", ""), await _body(request))
    service = request.app.state.fhir_service
    summary = await run_in_threadpool(
        run_import,
        request.app.state.store,
        request.app.state.studies,
        source,
        data,
        dry_run=dry_run,
        base_url=str(request.base_url).rstrip("/") + "/fhir",
        validator=service.validator,
    )
    return JSONResponse(summary.to_json())


async def _body(request: Request) -> bytes:
    limit: int = request.app.state.settings.max_body_bytes
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise FhirError(
                413, [Issue("too-costly", f"The file is over {limit} bytes, this server's limit: split it by study.")]
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _csv_payload(content_type: str, body: bytes) -> bytes:
    """The CSV bytes of a text/csv body, or of the `file` part of a multipart/form-data body."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type in _CSV_TYPES:
        _check_charset(content_type)
        return body
    if media_type == "multipart/form-data":
        return _file_part(content_type, body)
    raise FhirError(
        415,
        [
            Issue(
                "not-supported",
                f"Content-Type {media_type or '(none)'!r} is not accepted: send the CSV file as text/csv, or as the "
                "'file' part of a multipart/form-data form.",
                ("Content-Type",),
            )
        ],
    )


def _check_charset(content_type: str) -> None:
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            raise FhirError(
                415,
                [
                    Issue(
                        "not-supported",
                        f"charset={charset} is not accepted: CSV files are read as UTF-8; convert the file.",
                        ("Content-Type",),
                    )
                ],
            )


def _file_part(content_type: str, body: bytes) -> bytes:
    message: Any = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise bad_request("The multipart/form-data body cannot be read (no boundary, or no parts).", code="structure")
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            payload = part.get_payload(decode=True)
            return payload if isinstance(payload, bytes) else b""
    raise bad_request("The form has no 'file' part: send the CSV file as the form field named file.", code="required")
