"""What the service publishes at start-up, in one place for `serve` and its worker processes: the
terminology (applied on every write), the study specs as FHIR, and the demo data when asked."""

from __future__ import annotations

import logging

from sqlalchemy import Engine

from app.config import Settings
from app.mapping.study_fhir import install_studies
from app.mapping.study_spec import StudyRegistry
from app.mapping.terminology import install_terminology, load_terminology
from app.store.repository import Store

log = logging.getLogger("trialbridge.content")


def prepare_store(engine: Engine, settings: Settings, studies: StudyRegistry, *, load_demo: bool) -> Store:
    """The Store with the terminology's write normalisation, after publishing terminology and studies
    (idempotent PUTs: a restart writes no new versions) and, with `load_demo`, loading the demo data."""
    terminology = load_terminology(settings.mappings_dir)
    store = Store(engine, normalize=terminology.normalize)
    install_terminology(store, terminology)
    install_studies(store, studies)
    if load_demo:
        from app.demo import load_demo as load

        load(store, settings.fixtures_dir)
    return store
