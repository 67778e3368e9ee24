"""Request dependencies: the service, the FHIR base URL, the request body and content negotiation."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.api.responses import r4_body
from app.fhir.errors import FhirError, Issue
from app.fhir.rest import FhirService

_JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")


# Dependencies are `async def` on purpose: FastAPI runs plain `def` dependencies in the thread pool, and
# three thread hops per request cost more than these few lines of work (reads/s dropped ~4x).
async def get_service(request: Request) -> FhirService:
    service: FhirService = request.app.state.fhir_service
    return service


async def fhir_base(request: Request) -> str:
    configured = request.app.state.settings.base_url
    if configured:
        return str(configured).rstrip("/")
    return str(request.base_url).rstrip("/") + "/fhir"


async def fhir_body(request: Request) -> bytes:
    """The request body, refusing wrong content types (415) and bodies over the limit (413)."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type and media_type not in _JSON_TYPES:
        raise FhirError(
            415,
            [
                Issue(
                    "not-supported",
                    f"Content-Type {media_type!r} is not accepted: send FHIR JSON as application/fhir+json.",
                    ("Content-Type",),
                )
            ],
        )
    limit: int = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    return r4_body(request, b"".join(chunks))


def _too_large(size: int, limit: int) -> FhirError:
    return FhirError(
        413,
        [
            Issue(
                "too-costly",
                f"The request body is {size} bytes or more; this server accepts at "
                f"most {limit} bytes. Split the bundle into smaller ones.",
            )
        ],
    )


def prefer(request: Request, key: str) -> str | None:
    """One directive of the Prefer header: `return` or `handling`."""
    for part in request.headers.get("prefer", "").split(";"):
        for item in part.split(","):
            name, _, value = item.strip().partition("=")
            if name.strip().lower() == key:
                return value.strip().strip('"')
    return None


ServiceDep = Annotated[FhirService, Depends(get_service)]
BaseDep = Annotated[str, Depends(fhir_base)]
BodyDep = Annotated[bytes, Depends(fhir_body)]
