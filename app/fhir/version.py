"""The one place that pins the FHIR version: R4 (4.0.1) on the wire, validated with fhir.resources R4B.

fhir.resources 8.x ships R5 as its root package and R4B (4.3.0) as a sub-package; plain R4 is gone.
R4B is identical to R4 for the resources trials exchange (ResearchStudy, ResearchSubject,
AdverseEvent, Group, Observation, Patient), so R4 payloads are validated with the R4B models.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources import get_fhir_model_class as get_r5_model_class
from fhir.resources.R4B import get_fhir_model_class

FHIR_VERSION = "4.0.1"
FHIR_MIME = "application/fhir+json"
FHIR_CONTENT_TYPE = f"{FHIR_MIME}; fhirVersion=4.0; charset=utf-8"
# R5 (5.0.0) is offered as a view of a few research resources (app/fhir/r5.py), never stored.
R5_CONTENT_TYPE = f"{FHIR_MIME}; fhirVersion=5.0; charset=utf-8"


@cache
def model_class(resource_type: str) -> Any:
    """The R4B pydantic model for `resource_type`; ValueError when fhir.resources does not know it."""
    return get_fhir_model_class(resource_type)


@cache
def r5_model_class(resource_type: str) -> Any:
    """The fhir.resources R5 model for `resource_type` (R5 views only)."""
    return get_r5_model_class(resource_type)
