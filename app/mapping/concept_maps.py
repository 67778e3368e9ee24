"""FHIR ConceptMaps as code tables: load them from mappings/ and translate codes through them.

A ConceptMap here is plain R4 JSON (validated through the core on load), so the same table that a
mapping applies is the one the server publishes at /fhir/ConceptMap/{id}.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.fhir.errors import FhirError
from app.fhir.validation import parse_json, validate_resource
from app.mapping.yaml_source import SpecError

# Equivalences (R4 ConceptMap.group.element.target.equivalence) that mean "use this code".
MAPPING_EQUIVALENCES = frozenset(
    {"relatedto", "equivalent", "equal", "wider", "subsumes", "narrower", "specializes", "inexact"}
)


@dataclass(frozen=True, slots=True)
class Translation:
    system: str
    code: str
    display: str | None
    equivalence: str
    comment: str | None = None

    @property
    def exact(self) -> bool:
        return self.equivalence in ("equivalent", "equal")


class ConceptMapIndex:
    """(source system, source code) -> translations, over one or more ConceptMaps."""

    def __init__(self, concept_maps: Iterable[dict[str, Any]]) -> None:
        self.concept_maps = list(concept_maps)
        self._table: dict[tuple[str, str], list[Translation]] = {}
        for concept_map in self.concept_maps:
            for group in concept_map.get("group", []):
                source = group.get("source", "")
                target = group.get("target", "")
                for element in group.get("element", []):
                    for tgt in element.get("target", []):
                        equivalence = tgt.get("equivalence", "equivalent")
                        if equivalence not in MAPPING_EQUIVALENCES or "code" not in tgt:
                            continue
                        self._table.setdefault((source, element["code"]), []).append(
                            Translation(target, tgt["code"], tgt.get("display"), equivalence, tgt.get("comment"))
                        )

    def translate(self, system: str, code: str) -> list[Translation]:
        return list(self._table.get((system, code), ()))

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._table

    def items(self) -> Iterator[tuple[tuple[str, str], list[Translation]]]:
        """Every (source system, source code) with its translations, for building other lookup tables."""
        for key, translations in self._table.items():
            yield key, list(translations)


def load_concept_map(path: Path) -> dict[str, Any]:
    """Read and validate one ConceptMap JSON file; SpecError naming the file and every problem."""
    try:
        resource = parse_json(path.read_bytes(), str(path))
        validate_resource(resource, expected_type="ConceptMap")
    except FhirError as error:
        raise SpecError(path, [(None, str(issue.get("diagnostics"))) for issue in error.outcome()["issue"]]) from None
    assert isinstance(resource, dict)
    return resource


def load_concept_maps(directory: Path) -> ConceptMapIndex:
    """Every `ConceptMap-*.json` file of a directory (the naming convention of FHIR IG sources)."""
    return ConceptMapIndex(load_concept_map(path) for path in sorted(directory.glob("ConceptMap-*.json")))


def source_codes(index: ConceptMapIndex, system: str) -> frozenset[str]:
    """Every code the groups from `system` list, `unmatched` rows included: the codes a source may send."""
    return frozenset(
        element["code"]
        for concept_map in index.concept_maps
        for group in concept_map.get("group", [])
        if group.get("source") == system
        for element in group.get("element", [])
    )


def concept_map_url(index: ConceptMapIndex, system: str) -> str | None:
    """The canonical URL of the first ConceptMap with a group from `system` (to cite where a translation came from)."""
    for concept_map in index.concept_maps:
        if any(group.get("source") == system for group in concept_map.get("group", [])):
            url = concept_map.get("url")
            return url if isinstance(url, str) else None
    return None
