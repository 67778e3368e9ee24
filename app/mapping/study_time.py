"""Study time: the study day and nominal visit of a subject's data, relative to the subject's first dose.

CDISC convention (SDTM --DY): the day of the first dose is day 1, or day 0 where the study spec says
``first_dose_day: 0`` (MSC-SLE); later dates count on from it, earlier ones count back from it with no
day 0 in between for D1 studies: the day before the first dose is -1 either way.

Every subject Observation, AdverseEvent and MedicationAdministration an import writes carries one complex
extension (https://trialbridge.dev/fhir/StructureDefinition/study-time):

- ``study`` (valueReference ResearchStudy/{id}): always; it is also how a MedicationAdministration names its study;
- ``day`` (valueInteger): once the subject's first dose is known;
- ``visit`` (valueCoding, system ``https://trialbridge.dev/fhir/CodeSystem/{study}/visit``, code the visit id,
  display its name): the visit the source file recorded (``userSelected: true``), else the visit whose window
  holds the day (``StudySpec.nominal_visit``).

The search parameters ``study-day`` (number) and ``study-visit`` (token) index them
(app/fhir/r4_definitions/trialbridge_search_parameters.json) and are published as SearchParameter resources.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import date
from typing import Any

from app.fhir import bundle
from app.fhir.definitions import custom_search_parameter_resources
from app.fhir.errors import FhirError
from app.mapping.study_spec import StudySpec
from app.store.repository import Store

STUDY_TIME_URL = "https://trialbridge.dev/fhir/StructureDefinition/study-time"
TIMED_TYPES = ("Observation", "AdverseEvent", "MedicationAdministration")
_INSTALL_ATTEMPTS = 3


def visit_system(study_id: str) -> str:
    return f"https://trialbridge.dev/fhir/CodeSystem/{study_id}/visit"


def calendar_date(value: str) -> date:
    """The calendar date of a FHIR date or dateTime as written (its own time zone, not UTC)."""
    return date.fromisoformat(value[:10])


def study_day(when: str, first_dose: str, first_dose_day: int) -> int:
    """The study day of `when` (a FHIR date/dateTime) given the first dose's date/dateTime."""
    delta = (calendar_date(when) - calendar_date(first_dose)).days
    return delta + first_dose_day if delta >= 0 else delta


@dataclass(frozen=True, slots=True)
class StudyTime:
    study: str
    day: int | None
    visit: str | None
    visit_name: str | None
    recorded: bool  # the visit comes from the source file, not from the day's window

    def extension(self) -> dict[str, Any]:
        parts: list[dict[str, Any]] = [{"url": "study", "valueReference": {"reference": f"ResearchStudy/{self.study}"}}]
        if self.day is not None:
            parts.append({"url": "day", "valueInteger": self.day})
        if self.visit is not None:
            coding: dict[str, Any] = {"system": visit_system(self.study), "code": self.visit}
            if self.visit_name:
                coding["display"] = self.visit_name
            if self.recorded:
                coding["userSelected"] = True
            parts.append({"url": "visit", "valueCoding": coding})
        return {"url": STUDY_TIME_URL, "extension": parts}


def visit_names(study: StudySpec) -> dict[str, str]:
    """Every visit id the schedule knows (repeats expanded: course-1, course-2...; and the repeated visit's own id)."""
    key = (study.id, id(study))
    found = _VISIT_NAMES.get(key)
    if found is None:
        found = {visit.id: visit.name for visit in study.schedule}
        found.update({visit_id: name for visit_id, name, *_ in study.visits()})
        _VISIT_NAMES[key] = found
    return found


_VISIT_NAMES: dict[tuple[str, int], dict[str, str]] = {}  # specs are immutable; a few studies per process


def compute(study: StudySpec, when: str, first_dose: str | None, recorded_visit: str | None = None) -> StudyTime:
    """The study time of a date/dateTime; `recorded_visit` (from the source file) wins over the window's visit."""
    day = study_day(when, first_dose, study.first_dose_day) if first_dose else None
    names = visit_names(study)
    if recorded_visit is not None:
        visit_id = study.occurrence(recorded_visit, day)
        return StudyTime(study.id, day, visit_id, names.get(visit_id), True)
    visit = study.nominal_visit(day) if day is not None else None
    return StudyTime(study.id, day, visit, names.get(visit) if visit else None, False)


def find(resource: dict[str, Any]) -> dict[str, Any] | None:
    """The study-time extension of a resource, if any."""
    for extension in resource.get("extension") or ():
        if isinstance(extension, dict) and extension.get("url") == STUDY_TIME_URL:
            return extension
    return None


def study_of(resource: dict[str, Any]) -> str | None:
    """The study id a resource's study-time extension names."""
    found = find(resource)
    for part in (found or {}).get("extension") or ():
        if part.get("url") == "study":
            reference = (part.get("valueReference") or {}).get("reference", "")
            if reference.startswith("ResearchStudy/"):
                return str(reference.removeprefix("ResearchStudy/"))
    return None


def recorded_visit(resource: dict[str, Any]) -> str | None:
    """The visit id the source file recorded (userSelected), kept when study time is recomputed."""
    for part in (find(resource) or {}).get("extension") or ():
        coding = part.get("valueCoding") or {}
        if part.get("url") == "visit" and coding.get("userSelected") is True:
            return str(coding.get("code"))
    return None


def when_of(resource: dict[str, Any]) -> str | None:
    """The date study time counts from: effectiveDateTime (Observation, MedicationAdministration), AdverseEvent.date."""
    key = "date" if resource.get("resourceType") == "AdverseEvent" else "effectiveDateTime"
    value = resource.get(key)
    return value if isinstance(value, str) else None


def with_study_time(resource: dict[str, Any], time: StudyTime) -> dict[str, Any]:
    """A copy of `resource` whose study-time extension is `time` (after its other extensions)."""
    extensions = [
        e for e in resource.get("extension") or () if not (isinstance(e, dict) and e.get("url") == STUDY_TIME_URL)
    ]
    extensions.append(time.extension())
    if "extension" in resource:
        return {**resource, "extension": extensions}  # same key order: the extension list replaced in place
    updated: dict[str, Any] = {}
    after = "contained" if "contained" in resource else "id"
    for key, value in resource.items():
        updated[key] = value
        if key == after:
            updated["extension"] = extensions
    return updated if "extension" in updated else {"extension": extensions, **updated}


def recompute(resource: dict[str, Any], study: StudySpec, first_dose: str | None) -> dict[str, Any] | None:
    """The resource with its study time recomputed for this first dose; None when nothing changes."""
    when = when_of(resource)
    if when is None:
        return None
    time = compute(study, when, first_dose, recorded_visit(resource))
    if find(resource) == time.extension():
        return None
    return with_study_time(resource, time)


# ----------------------------------------------------------------------------------------- publication


def search_parameter_resources() -> list[dict[str, Any]]:
    """The SearchParameter resources for study-day and study-visit (copies)."""
    return copy.deepcopy(list(custom_search_parameter_resources()))


def install_search_parameters(store: Store, base_url: str = "http://localhost/fhir") -> None:
    """PUT the study-time SearchParameters at SearchParameter/{id}; unchanged ones write no new version."""
    request = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"SearchParameter/{r['id']}"}}
            for r in search_parameter_resources()
        ],
    }
    for attempt in range(_INSTALL_ATTEMPTS):
        try:
            bundle.process(store, copy.deepcopy(request), bundle.BundleOptions(base_url))
            return
        except FhirError as exc:  # another replica installing at the same moment: 409, retry
            if exc.status != 409 or attempt == _INSTALL_ATTEMPTS - 1:
                raise


__all__ = [
    "STUDY_TIME_URL",
    "TIMED_TYPES",
    "StudyTime",
    "calendar_date",
    "compute",
    "install_search_parameters",
    "recompute",
    "search_parameter_resources",
    "study_day",
    "study_of",
    "visit_names",
    "visit_system",
    "with_study_time",
]
