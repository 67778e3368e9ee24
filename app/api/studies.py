"""Study routes at /api/studies: eligibility of the stored population, of one Bundle, and screening.

`{study}` is a study id (`depil-2`) or its NCT number. Answers are plain JSON; every error is an
OperationOutcome (the FhirError handlers in app/main.py).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.api.deps import BaseDep, BodyDep
from app.eligibility.service import EligibilityQuery, EligibilityService
from app.fhir.errors import bad_request
from app.fhir.validation import parse_json

router = APIRouter(prefix="/api/studies", tags=["Studies"])

AsOf = Annotated[str | None, Query(alias="as-of", description="screening date, YYYY-MM-DD (default: today)")]
MAX_PAGE = 1_000


def _service(request: Request) -> EligibilityService:
    service: EligibilityService = request.app.state.eligibility
    return service


def _as_of(value: str | None) -> date:
    if value is None:
        return date.today()  # the screening date is a calendar date, local to the operator
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise bad_request(f"as-of must be a date (YYYY-MM-DD), not {value!r}.", "as-of") from None


@router.get("")
async def list_studies(request: Request) -> JSONResponse:
    studies = request.app.state.studies
    return JSONResponse(
        [
            {
                "id": s.id,
                "nct": s.identifiers.nct,
                "acronym": s.acronym,
                "title": s.title,
                "fhir": f"ResearchStudy/{s.id}",
            }
            for s in studies
        ]
    )


@router.get("/{study}/eligibility")
async def eligibility(
    study: str,
    request: Request,
    as_of: AsOf = None,
    status: Annotated[str | None, Query(description="eligible, ineligible or incomplete")] = None,
    patient: Annotated[str | None, Query(description="Patient/{id}: one patient")] = None,
    after: Annotated[str | None, Query(description="the next_after of the previous page")] = None,
    count: Annotated[int, Query(alias="_count", ge=1, le=MAX_PAGE)] = 50,
) -> JSONResponse:
    patient_id = None
    if patient is not None:
        if not patient.startswith("Patient/") or len(patient) <= len("Patient/"):
            raise bad_request(f"patient must be Patient/{{id}}, not {patient!r}.", "patient")
        patient_id = patient.removeprefix("Patient/")
    query = EligibilityQuery(_as_of(as_of), status, patient_id, after, count)
    body = await run_in_threadpool(_service(request).evaluate, study, query)
    return JSONResponse(body)


@router.post("/{study}/eligibility")
async def eligibility_of_bundle(study: str, request: Request, body: BodyDep, as_of: AsOf = None) -> JSONResponse:
    bundle: Any = parse_json(body)
    result = await run_in_threadpool(_service(request).evaluate_bundle, study, bundle, _as_of(as_of))
    return JSONResponse(result)


@router.post("/{study}/screen")
async def screen(study: str, request: Request, base: BaseDep, as_of: AsOf = None) -> JSONResponse:
    result = await run_in_threadpool(_service(request).record_screening, study, _as_of(as_of), base)
    return JSONResponse(result)
