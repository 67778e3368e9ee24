"""FHIR REST routes at /fhir: one generic router for every resource type, each route a few lines."""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from app.api.deps import BaseDep, BodyDep, ServiceDep, prefer
from app.api.responses import negotiate, reply
from app.fhir.errors import FhirError, Issue

router = APIRouter(prefix="/fhir", dependencies=[Depends(negotiate)], tags=["FHIR R4"])


def _params(request: Request) -> list[tuple[str, str]]:
    return list(request.query_params.multi_items())


@router.get("/metadata")
async def metadata(request: Request, service: ServiceDep, base: BaseDep) -> Response:
    return reply(request, service.capabilities(base))


@router.post("")
@router.post("/", include_in_schema=False)  # fhirpy and fhirclient post bundles to `[base]/`
async def transaction_or_batch(request: Request, service: ServiceDep, base: BaseDep, body: BodyDep) -> Response:
    result = await run_in_threadpool(service.process_bundle, body, base, prefer=prefer(request, "return"))
    return reply(request, result)


@router.get("/_history")
async def system_history(request: Request, service: ServiceDep, base: BaseDep) -> Response:
    return reply(request, await run_in_threadpool(service.history, None, None, _params(request), base))


@router.get("/Patient/{patient_id}/$everything")
async def patient_everything(patient_id: str, request: Request, service: ServiceDep, base: BaseDep) -> Response:
    return reply(request, await run_in_threadpool(service.everything, patient_id, _params(request), base))


@router.get("/{resource_type}/_history")
async def type_history(resource_type: str, request: Request, service: ServiceDep, base: BaseDep) -> Response:
    return reply(request, await run_in_threadpool(service.history, resource_type, None, _params(request), base))


@router.post("/{resource_type}/_search")
async def search_post(resource_type: str, request: Request, service: ServiceDep, base: BaseDep) -> Response:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise FhirError(
            415,
            [
                Issue(
                    "not-supported",
                    "POST _search takes its parameters form-encoded (application/x-www-form-urlencoded).",
                    ("Content-Type",),
                )
            ],
        )
    form = parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    lenient = prefer(request, "handling") == "lenient"
    result = await run_in_threadpool(service.search, resource_type, _params(request) + form, base, lenient=lenient)
    return reply(request, result)


@router.get("/{resource_type}")
async def search(resource_type: str, request: Request, service: ServiceDep, base: BaseDep) -> Response:
    lenient = prefer(request, "handling") == "lenient"
    return reply(
        request, await run_in_threadpool(service.search, resource_type, _params(request), base, lenient=lenient)
    )


@router.post("/{resource_type}")
async def create(resource_type: str, request: Request, service: ServiceDep, base: BaseDep, body: BodyDep) -> Response:
    result = await run_in_threadpool(
        service.create,
        resource_type,
        body,
        base,
        params=_params(request),
        if_none_exist=request.headers.get("if-none-exist"),
        prefer=prefer(request, "return"),
    )
    return reply(request, result)


@router.put("/{resource_type}")
async def conditional_update(
    resource_type: str, request: Request, service: ServiceDep, base: BaseDep, body: BodyDep
) -> Response:
    result = await run_in_threadpool(
        service.conditional_update,
        resource_type,
        request.url.query,
        body,
        base,
        if_match=request.headers.get("if-match"),
        prefer=prefer(request, "return"),
    )
    return reply(request, result)


@router.delete("/{resource_type}")
async def conditional_delete(resource_type: str, request: Request, service: ServiceDep, base: BaseDep) -> Response:
    return reply(request, await run_in_threadpool(service.conditional_delete, resource_type, request.url.query, base))


@router.get("/{resource_type}/{res_id}")
async def read(resource_type: str, res_id: str, request: Request, service: ServiceDep, base: BaseDep) -> Response:
    # Inline, not in the thread pool: one primary-key lookup takes less time than the thread hop would.
    return reply(request, service.read(resource_type, res_id, base, request.headers.get("if-none-match")))


@router.put("/{resource_type}/{res_id}")
async def update(
    resource_type: str, res_id: str, request: Request, service: ServiceDep, base: BaseDep, body: BodyDep
) -> Response:
    result = await run_in_threadpool(
        service.update,
        resource_type,
        res_id,
        body,
        base,
        if_match=request.headers.get("if-match"),
        prefer=prefer(request, "return"),
    )
    return reply(request, result)


@router.delete("/{resource_type}/{res_id}")
async def delete(resource_type: str, res_id: str, request: Request, service: ServiceDep, base: BaseDep) -> Response:
    result = await run_in_threadpool(
        service.delete, resource_type, res_id, base, if_match=request.headers.get("if-match")
    )
    return reply(request, result)


@router.get("/{resource_type}/{res_id}/_history")
async def instance_history(
    resource_type: str, res_id: str, request: Request, service: ServiceDep, base: BaseDep
) -> Response:
    return reply(request, await run_in_threadpool(service.history, resource_type, res_id, _params(request), base))


@router.get("/{resource_type}/{res_id}/_history/{version}")
async def vread(
    resource_type: str, res_id: str, version: str, request: Request, service: ServiceDep, base: BaseDep
) -> Response:
    return reply(request, await run_in_threadpool(service.vread, resource_type, res_id, version, base))
