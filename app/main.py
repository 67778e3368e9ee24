"""Application factory: settings, database, migrations, the FHIR service, routers and error handlers."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import __version__
from app.api import fhir, imports
from app.api import studies as study_routes
from app.api.responses import fhir_response
from app.config import Settings, get_settings
from app.content import prepare_store
from app.eligibility.service import EligibilityService
from app.fhir import ucum
from app.fhir.errors import FhirError, Issue, operation_outcome
from app.fhir.rest import FhirService, Limits
from app.fhir.validator_pool import ValidatorPool, default_workers
from app.mapping.sources import load_sources
from app.mapping.study_spec import load_studies
from app.runtime import settle_heap
from app.store.db import make_engine, migrate

log = logging.getLogger("trialbridge")

_HTTP_ISSUE_CODES = {
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    413: "too-costly",
    415: "not-supported",
}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        studies = load_studies(settings.mappings_dir / "studies")  # a bad spec stops start-up here
        sources = load_sources(settings.mappings_dir / "sources")  # CSV import specs: likewise
        engine = make_engine(settings.database_url)
        migrate(engine)
        ucum.warm_up()  # ~1.5 s of unit tables, paid at start-up rather than by the first lab result
        workers = default_workers() if settings.validation_workers is None else settings.validation_workers
        validator = ValidatorPool(workers)
        store = prepare_store(engine, settings, studies, sources, load_demo=settings.load_demo, validator=validator)
        settle_heap()
        app.state.settings = settings
        app.state.store = store
        app.state.studies = studies
        app.state.sources = sources
        app.state.eligibility = EligibilityService(store, studies, parallel=settings.screening_parallel)
        app.state.fhir_service = FhirService(
            store,
            Limits(
                max_bundle_entries=settings.max_bundle_entries,
                default_page_size=settings.default_page_size,
                max_page_size=settings.max_page_size,
            ),
            validator,
        )
        try:
            yield
        finally:
            validator.close()
            store.close()
            engine.dispose()

    app = FastAPI(
        title="TrialBridge",
        version=__version__,
        lifespan=lifespan,
        description="FHIR R4 interoperability for immune-therapy clinical trials.",
    )
    app.include_router(fhir.router)
    app.include_router(imports.router)
    app.include_router(study_routes.router)
    _install_error_handlers(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FhirError)
    async def _fhir_error(_request: Request, exc: FhirError) -> Response:
        return fhir_response(exc.outcome(), exc.status, exc.headers or None)

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_request: Request, exc: RequestValidationError) -> Response:
        issues = [
            Issue("invalid", f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}") for e in exc.errors()
        ]
        return fhir_response(operation_outcome(issues), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = str(exc.detail)
        if exc.status_code == 404:
            detail = f"No FHIR endpoint at {request.url.path}; the FHIR base is /fhir (see /fhir/metadata)."
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}."
        code = _HTTP_ISSUE_CODES.get(exc.status_code, "processing")
        return fhir_response(
            operation_outcome([Issue(code, detail)]), exc.status_code, dict(exc.headers) if exc.headers else None
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        # Never leak internals: log with an id the operator can grep for, return only the id.
        incident = uuid.uuid4().hex[:12]
        log.exception("unhandled error, incident %s", incident, exc_info=exc)
        return fhir_response(
            operation_outcome(
                [
                    Issue(
                        "exception",
                        f"Internal server error (incident {incident}). "
                        "The error was logged; quote the incident id when reporting.",
                    )
                ]
            ),
            500,
        )
