"""What the service publishes at start-up, in one place for `serve` and its worker processes: the
terminology (applied on every write), the study specs as FHIR, and the demo data when asked."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from sqlalchemy import Engine

from app.config import Settings
from app.demo import load_demo as load_bundles
from app.fhir.errors import FhirError
from app.fhir.validator_pool import INLINE, ValidatorPool
from app.mapping.imports import import_directory
from app.mapping.sources import SourceRegistry
from app.mapping.study_fhir import TB, install_resources, install_studies
from app.mapping.study_spec import StudyRegistry
from app.mapping.study_time import install_search_parameters
from app.mapping.terminology import install_terminology, load_terminology
from app.store.repository import Store

log = logging.getLogger("trialbridge.content")

DEMO_MARKER_ID = "trialbridge-demo"


def prepare_store(
    engine: Engine,
    settings: Settings,
    studies: StudyRegistry,
    sources: SourceRegistry,
    *,
    load_demo: bool,
    validator: ValidatorPool = INLINE,
) -> Store:
    """The Store with the terminology's write normalisation, after publishing terminology, studies and our
    SearchParameters (idempotent PUTs: a restart writes no new versions) and, with `load_demo`, loading the
    demo bundles and importing the synthetic study CSVs (fixtures/studies) through the source specs."""
    terminology = load_terminology(settings.mappings_dir)
    store = Store(engine, normalize=terminology.normalize)
    try:
        install_terminology(store, terminology)
        install_studies(store, studies)
        install_search_parameters(store)  # study-day, study-visit, ... at /fhir/SearchParameter/{id}
        if load_demo:
            load_demo_data(store, settings, studies, sources, validator)
    except BaseException:
        store.close()
        raise
    return store


def load_demo_data(
    store: Store, settings: Settings, studies: StudyRegistry, sources: SourceRegistry, validator: ValidatorPool
) -> None:
    """The demo bundles and the synthetic study CSVs, unless this exact demo (same files, same specs) is
    already loaded: importing ~75,000 resources takes a minute, and every restart would repeat it to change
    nothing. A marker resource records the digest of what was loaded."""
    digest = demo_digest(settings)
    try:
        marker = store.read("Basic", DEMO_MARKER_ID).content or {}
    except FhirError:
        marker = {}
    if _marker_digest(marker) == digest:
        log.info("demo: already loaded (digest %s)", digest[:12])
        return
    load_bundles(store, settings.fixtures_dir)
    if (settings.fixtures_dir / "studies").is_dir():
        summaries = import_directory(store, studies, settings.fixtures_dir / "studies", sources, validator=validator)
        log.info("demo: imported %d study files", len(summaries))
    install_resources(store, [_marker(digest)])


def demo_digest(settings: Settings) -> str:
    fixtures, mappings = settings.fixtures_dir, settings.mappings_dir
    files = [
        *((fixtures, p) for p in sorted((fixtures / "demo").glob("*.json"))),
        *((fixtures, p) for p in sorted((fixtures / "studies").glob("*/*.csv"))),
        *((mappings, p) for p in sorted(mappings.glob("*/*.yaml"))),
        *((mappings, p) for p in sorted(mappings.glob("*/*.json"))),
    ]
    digest = hashlib.sha256()
    for root, path in files:
        digest.update(f"{root.name}/{path.relative_to(root)}".encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _marker(digest: str) -> dict[str, Any]:
    return {
        "resourceType": "Basic",
        "id": DEMO_MARKER_ID,
        "code": {"coding": [{"system": f"{TB}/CodeSystem/tag", "code": "demo-load"}], "text": "demo data loaded"},
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:sha256:{digest}"}],
    }


def _marker_digest(marker: dict[str, Any]) -> str | None:
    for identifier in marker.get("identifier", []):
        value = str(identifier.get("value", ""))
        if value.startswith("urn:sha256:"):
            return value.removeprefix("urn:sha256:")
    return None
