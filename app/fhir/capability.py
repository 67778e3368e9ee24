"""The CapabilityStatement: generated from what the server really indexes and routes, never hand-kept."""

from __future__ import annotations

from functools import cache
from typing import Any

from app import __version__
from app.fhir.definitions import resource_types
from app.fhir.version import FHIR_MIME, FHIR_VERSION
from app.store.indexer import indexed_parameters

_TYPE_INTERACTIONS = ("read", "vread", "update", "delete", "history-instance", "history-type", "create", "search-type")
_RESOURCE_PARAMS = (
    ("_id", "token", "http://hl7.org/fhir/SearchParameter/Resource-id"),
    ("_lastUpdated", "date", "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated"),
)


@cache
def _resources() -> list[dict[str, Any]]:
    resources = []
    for resource_type in sorted(resource_types()):
        params = [{"name": name, "type": kind, "definition": url} for name, kind, url in _RESOURCE_PARAMS]
        params += [
            # The parameter's own canonical (Observation `code` is clinical-code; ours are trialbridge.dev).
            {
                "name": code,
                "type": p.type,
                "definition": p.url or f"http://hl7.org/fhir/SearchParameter/{p.base}-{code}",
            }
            for code, p in sorted(indexed_parameters(resource_type).items())
            if not code.startswith("_")
        ] + [
            {"name": code, "type": p.type, "definition": f"http://hl7.org/fhir/SearchParameter/Resource-{code[1:]}"}
            for code, p in sorted(indexed_parameters(resource_type).items())
            if code.startswith("_")
        ]
        entry: dict[str, Any] = {
            "type": resource_type,
            "interaction": [{"code": code} for code in _TYPE_INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "referencePolicy": ["literal", "logical", "resolves"],
            "searchInclude": [
                f"{resource_type}:{c}"
                for c, p in sorted(indexed_parameters(resource_type).items())
                if p.type == "reference"
            ],
            "searchParam": params,
        }
        if resource_type == "Patient":
            entry["operation"] = [
                {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}
            ]
        resources.append(entry)
    return resources


def capability_statement(base_url: str) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-22",
        "publisher": "TrialBridge",
        "kind": "instance",
        "software": {"name": "TrialBridge", "version": __version__},
        "implementation": {"description": "TrialBridge FHIR R4 server for clinical trials", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": [FHIR_MIME, "json"],
        "rest": [
            {
                "mode": "server",
                "resource": _resources(),
                "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
                "operation": [
                    {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}
                ],
            }
        ],
    }
