"""ClinicalTrials.gov API v2 study records as R4 ResearchStudy resources (field table: mappings/ctgov/README.md)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.fhir.errors import FhirError, Issue, unprocessable
from app.fhir.systems import LOINC, UCUM
from app.mapping.concept_maps import (
    ConceptMapIndex,
    Translation,
    concept_map_url,
    load_concept_maps,
    source_codes,
)

# ClinicalTrials.gov publishes no FHIR code systems for its enums: these names are the project's own
# (documented in mappings/ctgov/README.md), one per API enum type.
STATUS_SYSTEM = "https://clinicaltrials.gov/data-api/api#enum-Status"
PHASE_SYSTEM = "https://clinicaltrials.gov/data-api/api#enum-Phase"
PRIMARY_PURPOSE_SYSTEM = "https://clinicaltrials.gov/data-api/api#enum-PrimaryPurpose"

NCT_SYSTEM = "http://clinicaltrials.gov"
# secondaryIdInfos[].type -> Identifier.system, for registries whose identifier system is settled.
SECONDARY_ID_SYSTEMS = {"EUDRACT_NUMBER": "https://www.clinicaltrialsregister.eu"}

OBJECTIVE_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/research-study-objective-type"
GENDER_SYSTEM = "http://hl7.org/fhir/administrative-gender"

INEXACT_TRANSLATION_URL = "https://trialbridge.dev/fhir/StructureDefinition/inexact-translation"
ELIGIBILITY_CRITERIA_URL = "https://trialbridge.dev/fhir/StructureDefinition/eligibility-criteria"

_NCT_ID = re.compile(r"NCT\d{8}")
_PARTIAL_DATE = re.compile(r"\d{4}(-\d{2}(-\d{2})?)?")
_AGE = re.compile(r"(\d+(?:\.\d+)?) (Year|Month|Week|Day|Hour|Minute)s?")
_AGE_UNITS = {"Year": "a", "Month": "mo", "Week": "wk", "Day": "d", "Hour": "h", "Minute": "min"}
_SEXES = {"FEMALE": "female", "MALE": "male", "ALL": None}
_OUTCOME_TYPES = {"primaryOutcomes": "primary", "secondaryOutcomes": "secondary", "otherOutcomes": "exploratory"}
# The registry's own wording where title-casing the enum name falls short.
_LABELS = {"NA": "N/A", "NONE": "None (Open Label)"}

# R4 element order, so that the output (and the golden files) read like the spec.
_ELEMENT_ORDER = (
    "resourceType",
    "id",
    "contained",
    "identifier",
    "title",
    "status",
    "_status",
    "primaryPurposeType",
    "phase",
    "category",
    "focus",
    "condition",
    "relatedArtifact",
    "keyword",
    "location",
    "description",
    "enrollment",
    "period",
    "sponsor",
    "site",
    "reasonStopped",
    "arm",
    "objective",
)


def load_ctgov_concept_maps(mappings_dir: Path) -> ConceptMapIndex:
    """The ConceptMaps this mapping applies (`mappings/ctgov/ConceptMap-*.json`)."""
    return load_concept_maps(mappings_dir / "ctgov")


def ctgov_to_research_study(record: dict[str, Any], *, concept_maps: ConceptMapIndex) -> dict[str, Any]:
    """An R4 ResearchStudy (id `ctgov-<nct>`) with its sponsor, sites and eligibility as contained resources.

    Raises FhirError (422) listing every problem of the record, each naming its JSON path.
    """
    if not isinstance(record, dict) or not isinstance(record.get("protocolSection"), dict):
        raise unprocessable(
            "A ClinicalTrials.gov study record is a JSON object with a protocolSection object "
            "(the body of GET /api/v2/studies/{nctId}).",
            "protocolSection",
            code="structure",
        )
    nct_id = _nct_id(record)
    study: dict[str, Any] = {"resourceType": "ResearchStudy", "id": f"ctgov-{nct_id.lower()}"}
    contained: list[dict[str, Any]] = []
    issues: list[Issue] = []
    for build in _BUILDERS:
        try:
            elements = build(record, concept_maps)
        except FhirError as exc:  # keep going: one error then lists every problem of the record
            issues.extend(exc.issues)
            continue
        contained.extend(elements.pop("contained", []))
        study.update(elements)
    if issues:
        raise FhirError(422, issues)
    if contained:
        study["contained"] = contained
    return {key: study[key] for key in _ELEMENT_ORDER if key in study}


def to_fhir_identification(record: dict[str, Any], concept_maps: ConceptMapIndex) -> dict[str, Any]:
    """identifier (NCT number, organisation's protocol id, secondary ids), title, relatedArtifact.

    https://hl7.org/fhir/R4/researchstudy-definitions.html#ResearchStudy.identifier
    """
    module = "protocolSection.identificationModule"
    nct_id = _nct_id(record)
    identifiers: list[dict[str, Any]] = [{"use": "official", "system": NCT_SYSTEM, "value": nct_id}]
    org_study_id = _text(record, f"{module}.orgStudyIdInfo.id")
    if org_study_id:
        identifier: dict[str, Any] = {"use": "secondary", "value": org_study_id}
        organization = _text(record, f"{module}.organization.fullName")
        if organization:
            identifier["assigner"] = {"display": organization}
        identifiers.append(identifier)
    for i, info in enumerate(_objects(record, f"{module}.secondaryIdInfos")):
        path = f"{module}.secondaryIdInfos[{i}]"
        identifier = {"use": "secondary"}
        system = SECONDARY_ID_SYSTEMS.get(_text(info, "type", path) or "")
        if system:
            identifier["system"] = system
        identifier["value"] = _required_text(info, "id", path)
        domain = _text(info, "domain", path)
        if domain:
            identifier["assigner"] = {"display": domain}
        identifiers.append(identifier)
    return {
        "identifier": identifiers,
        "title": _required_text(record, f"{module}.briefTitle"),
        "relatedArtifact": [
            {
                "type": "documentation",
                "label": "ClinicalTrials.gov record",
                "url": f"https://clinicaltrials.gov/study/{nct_id}",
            }
        ],
    }


def to_fhir_status(record: dict[str, Any], concept_maps: ConceptMapIndex) -> dict[str, Any]:
    """status (ConceptMap-ctgov-status; lossy rows marked on `_status`), reasonStopped, period.

    https://hl7.org/fhir/R4/researchstudy-definitions.html#ResearchStudy.status
    """
    module = "protocolSection.statusModule"
    path = f"{module}.overallStatus"
    code = _required_text(record, path)
    translation = _translate(concept_maps, STATUS_SYSTEM, code, path, "overallStatus")
    comment = translation.comment if translation else None
    last_path = f"{module}.lastKnownStatus"
    last = _text(record, last_path)
    if translation is None and code == "UNKNOWN" and last is not None:
        # UNKNOWN: the record went unverified for two years; lastKnownStatus says what it was then.
        translation = _translate(concept_maps, STATUS_SYSTEM, last, last_path, "lastKnownStatus")
        comment = f"overallStatus is UNKNOWN; translated from lastKnownStatus {last}."
    if translation is None:
        reason = f"neither has {last_path}" if code == "UNKNOWN" else "see the ConceptMap's comment"
        raise unprocessable(f"{path}: {code!r} has no R4 ResearchStudy.status ({reason}).", path, "code-invalid")
    elements: dict[str, Any] = {"status": translation.code}
    if comment is not None or not translation.exact:
        elements["_status"] = {"extension": [_inexact(concept_maps, STATUS_SYSTEM, code, comment)]}
    why_stopped = _text(record, f"{module}.whyStopped")
    if why_stopped:
        elements["reasonStopped"] = {"text": why_stopped}
    period = {}
    for key, struct in (("start", "startDateStruct"), ("end", "completionDateStruct")):
        date = _date(record, f"{module}.{struct}.date")
        if date:
            period[key] = date
    if period:
        elements["period"] = period
    return elements


def to_fhir_design(record: dict[str, Any], concept_maps: ConceptMapIndex) -> dict[str, Any]:
    """primaryPurposeType and phase (ConceptMaps), category (study type, allocation, model, masking as text).

    https://hl7.org/fhir/R4/researchstudy-definitions.html#ResearchStudy.phase
    """
    module = "protocolSection.designModule"
    elements: dict[str, Any] = {}
    purpose_path = f"{module}.designInfo.primaryPurpose"
    purpose = _text(record, purpose_path)
    if purpose:
        translation = _translate(concept_maps, PRIMARY_PURPOSE_SYSTEM, purpose, purpose_path, "primaryPurpose")
        elements["primaryPurposeType"] = _concept(translation, _label(purpose))
    phases_path = f"{module}.phases"
    phases = _texts(record, phases_path)
    if phases:
        known = source_codes(concept_maps, PHASE_SYSTEM)
        for i, phase in enumerate(phases):
            if phase not in known:
                _translate(concept_maps, PHASE_SYSTEM, phase, f"{phases_path}[{i}]", "phase")  # raises
        # Two-phase studies list both phases; the map has the pair as one code. The enum's codes sort
        # lexicographically in phase order (EARLY_PHASE1 < PHASE1 < PHASE2 ...).
        combined = "+".join(sorted(set(phases)))
        translation = _translate(concept_maps, PHASE_SYSTEM, combined, phases_path, "phase combination")
        if translation is None:
            raise unprocessable(
                f"{phases_path}: {combined!r} has no R4 ResearchStudy.phase.", phases_path, "code-invalid"
            )
        elements["phase"] = _concept(translation, translation.display or combined)
    categories = []
    study_type = _text(record, f"{module}.studyType")
    if study_type:
        categories.append(f"Study type: {_label(study_type)}")
    for name, key in (
        ("Allocation", "allocation"),
        ("Intervention model", "interventionModel"),
        ("Observational model", "observationalModel"),
        ("Time perspective", "timePerspective"),
    ):
        value = _text(record, f"{module}.designInfo.{key}")
        if value:
            categories.append(f"{name}: {_label(value)}")
    masking = _text(record, f"{module}.designInfo.maskingInfo.masking")
    if masking:
        who = _texts(record, f"{module}.designInfo.maskingInfo.whoMasked")
        categories.append(f"Masking: {_label(masking)}" + (f" ({', '.join(map(_label, who))})" if who else ""))
    if categories:
        elements["category"] = [{"text": text} for text in categories]
    return elements


def to_fhir_topics(record: dict[str, Any], concept_maps: ConceptMapIndex) -> dict[str, Any]:
    """focus (intervention names), condition, keyword, as text: the registry gives no codes for them.

    https://hl7.org/fhir/R4/researchstudy-definitions.html#ResearchStudy.condition
    """
    interventions = _objects(record, "protocolSection.armsInterventionsModule.interventions")
    focus = [
        _required_text(item, "name", f"protocolSection.armsInterventionsModule.interventions[{i}]")
        for i, item in enumerate(interventions)
    ]
    elements: dict[str, Any] = {}
    for element, values in (
        ("focus", focus),
        ("condition", _texts(record, "protocolSection.conditionsModule.conditions")),
        ("keyword", _texts(record, "protocolSection.conditionsModule.keywords")),
    ):
        if values:
            elements[element] = [{"text": value} for value in values]
    return elements


def to_fhir_description(record: dict[str, Any], concept_maps: ConceptMapIndex) -> dict[str, Any]:
    """description: the brief summary, then the detailed description when there is one (both markdown).

    https://hl7.org/fhir/R4/researchstudy-definitions.html#ResearchStudy.description
    """
    parts = [
        _text(record, "protocolSection.descriptionModule.briefSummary"),
        _text(record, "protocolSection.descriptionModule.detailedDescription"),
    ]
    text = "\n\n".join(part for part in parts if part)
    return {"description": text} if text else {}


def to_fhir_enrollment(record: dict[str, Any], concept_maps: ConceptMapIndex) -> dict[str, Any]:
    """enrollment: a contained descriptive Group with the age range, sex, enrollment count and criteria text.

    https://hl7.org/fhir/R4/researchstudy-definitions.html#ResearchStudy.enrollment
    """
    module = "protocolSection.eligibilityModule"
    group: dict[str, Any] = {"resourceType": "Group", "id": "enrollment"}
    criteria = _text(record, f"{module}.eligibilityCriteria")
    if criteria:
        # A contained resource may not carry narrative (dom-1), so the registry's text is an extension.
        group["extension"] = [{"url": ELIGIBILITY_CRITERIA_URL, "valueMarkdown": criteria}]
    group.update({"type": "person", "actual": False, "name": f"Eligibility criteria of {_nct_id(record)}"})
    count = _at(record, "protocolSection.designModule.enrollmentInfo.count")
    if count is not None:
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise unprocessable(
                "protocolSection.designModule.enrollmentInfo.count: expected a whole number of participants.",
                "protocolSection.designModule.enrollmentInfo.count",
                code="value",
            )
        group["quantity"] = count
    characteristics = []
    age = {}
    for bound, key in (("low", "minimumAge"), ("high", "maximumAge")):
        quantity = _age(record, f"{module}.{key}")
        if quantity:
            age[bound] = quantity
    if age:
        characteristics.append(
            {
                "code": {"coding": [{"system": LOINC, "code": "30525-0", "display": "Age"}], "text": "Age"},
                "valueRange": age,
                "exclude": False,
            }
        )
    sex_path = f"{module}.sex"
    sex = _text(record, sex_path)
    if sex is not None and sex not in _SEXES:
        raise unprocessable(
            f"{sex_path}: {sex!r} is not a ClinicalTrials.gov sex (one of {', '.join(_SEXES)}).",
            sex_path,
            "code-invalid",
        )
    gender = _SEXES.get(sex or "ALL")
    if gender:
        characteristics.append(
            {
                "code": {"coding": [{"system": LOINC, "code": "46098-0", "display": "Sex"}], "text": "Sex"},
                "valueCodeableConcept": {"coding": [{"system": GENDER_SYSTEM, "code": gender}]},
                "exclude": False,
            }
        )
    if characteristics:
        group["characteristic"] = characteristics
    return {"contained": [group], "enrollment": [{"reference": "#enrollment"}]}


def to_fhir_sponsor(record: dict[str, Any], concept_maps: ConceptMapIndex) -> dict[str, Any]:
    """sponsor: the lead sponsor as a contained Organization (R4 has no element for collaborators).

    https://hl7.org/fhir/R4/researchstudy-definitions.html#ResearchStudy.sponsor
    """
    name = _text(record, "protocolSection.sponsorCollaboratorsModule.leadSponsor.name")
    if not name:
        return {}
    return {
        "contained": [{"resourceType": "Organization", "id": "sponsor", "name": name}],
        "sponsor": {"reference": "#sponsor", "display": name},
    }


def to_fhir_sites(record: dict[str, Any], concept_maps: ConceptMapIndex) -> dict[str, Any]:
    """site (contained Locations, one per facility) and location (the countries, as text).

    https://hl7.org/fhir/R4/researchstudy-definitions.html#ResearchStudy.site
    """
    path = "protocolSection.contactsLocationsModule.locations"
    contained: list[dict[str, Any]] = []
    sites = []
    countries: list[str] = []
    for i, item in enumerate(_objects(record, path)):
        where = f"{path}[{i}]"
        location: dict[str, Any] = {"resourceType": "Location", "id": f"site-{i + 1}"}
        facility = _text(item, "facility", where)
        if facility:
            location["name"] = facility
        address = {
            target: value
            for target, key in (("city", "city"), ("state", "state"), ("postalCode", "zip"), ("country", "country"))
            if (value := _text(item, key, where))
        }
        if address:
            location["address"] = address
        contained.append(location)
        sites.append({"reference": f"#site-{i + 1}"} | ({"display": facility} if facility else {}))
        country = address.get("country")
        if country and country not in countries:
            countries.append(country)
    elements: dict[str, Any] = {}
    if contained:
        elements.update(contained=contained, site=sites)
    if countries:
        elements["location"] = [{"text": country} for country in countries]
    return elements


def to_fhir_arms(record: dict[str, Any], concept_maps: ConceptMapIndex) -> dict[str, Any]:
    """arm[]: label, type (as the registry shows it) and description of each arm group.

    https://hl7.org/fhir/R4/researchstudy-definitions.html#ResearchStudy.arm
    """
    path = "protocolSection.armsInterventionsModule.armGroups"
    arms = []
    for i, group in enumerate(_objects(record, path)):
        where = f"{path}[{i}]"
        arm: dict[str, Any] = {"name": _required_text(group, "label", where)}
        arm_type = _text(group, "type", where)
        if arm_type:
            arm["type"] = {"text": _label(arm_type)}
        description = _text(group, "description", where)
        if description:
            arm["description"] = description
        arms.append(arm)
    return {"arm": arms} if arms else {}


def to_fhir_objectives(record: dict[str, Any], concept_maps: ConceptMapIndex) -> dict[str, Any]:
    """objective[]: one per outcome measure, typed primary, secondary or exploratory (other outcomes).

    R4 objectives have a name only: the outcome's time frame and description stay in the registry.
    https://hl7.org/fhir/R4/researchstudy-definitions.html#ResearchStudy.objective
    """
    objectives = []
    for key, objective_type in _OUTCOME_TYPES.items():
        path = f"protocolSection.outcomesModule.{key}"
        for i, outcome in enumerate(_objects(record, path)):
            objectives.append(
                {
                    "name": _required_text(outcome, "measure", f"{path}[{i}]"),
                    "type": {
                        "coding": [
                            {"system": OBJECTIVE_TYPE_SYSTEM, "code": objective_type, "display": objective_type.title()}
                        ]
                    },
                }
            )
    return {"objective": objectives} if objectives else {}


_BUILDERS: tuple[Callable[[dict[str, Any], ConceptMapIndex], dict[str, Any]], ...] = (
    to_fhir_identification,
    to_fhir_status,
    to_fhir_design,
    to_fhir_topics,
    to_fhir_description,
    to_fhir_enrollment,
    to_fhir_sponsor,
    to_fhir_sites,
    to_fhir_arms,
    to_fhir_objectives,
)


# --- reading the record: every problem names the JSON path it was found at ---------------------------------


def _at(node: Any, path: str, root: str = "") -> Any:
    """The value at a dotted path below `node` (None when absent); `root` is the path of `node` itself."""
    walked = root
    for key in path.split("."):
        if node is None:
            return None
        if not isinstance(node, dict):
            raise unprocessable(f"{walked}: expected a JSON object.", walked, code="structure")
        node = node.get(key)
        walked = f"{walked}.{key}" if walked else key
    return node


def _text(node: Any, path: str, root: str = "") -> str | None:
    value = _at(node, path, root)
    if value is not None and not isinstance(value, str):
        where = f"{root}.{path}" if root else path
        raise unprocessable(f"{where}: expected a string.", where, code="structure")
    return value or None


def _required_text(node: Any, path: str, root: str = "") -> str:
    value = _text(node, path, root)
    if value is None:
        where = f"{root}.{path}" if root else path
        raise unprocessable(f"{where}: required, and missing from the record.", where, code="required")
    return value


def _list(node: Any, path: str) -> list[Any]:
    value = _at(node, path)
    if value is None:
        return []
    if not isinstance(value, list):
        raise unprocessable(f"{path}: expected a JSON array.", path, code="structure")
    return value


def _texts(node: Any, path: str) -> list[str]:
    values = _list(node, path)
    for i, value in enumerate(values):
        if not isinstance(value, str) or not value:
            raise unprocessable(f"{path}[{i}]: expected a non-empty string.", f"{path}[{i}]", code="structure")
    return values


def _objects(node: Any, path: str) -> list[dict[str, Any]]:
    values = _list(node, path)
    for i, value in enumerate(values):
        if not isinstance(value, dict):
            raise unprocessable(f"{path}[{i}]: expected a JSON object.", f"{path}[{i}]", code="structure")
    return values


def _nct_id(record: dict[str, Any]) -> str:
    path = "protocolSection.identificationModule.nctId"
    nct_id = _required_text(record, path)
    if not _NCT_ID.fullmatch(nct_id):
        raise unprocessable(f"{path}: {nct_id!r} is not an NCT number (NCT and 8 digits).", path, code="value")
    return nct_id


def _date(record: dict[str, Any], path: str) -> str | None:
    value = _text(record, path)
    if value is not None and not _PARTIAL_DATE.fullmatch(value):
        raise unprocessable(f"{path}: {value!r} is not a date (YYYY, YYYY-MM or YYYY-MM-DD).", path, code="value")
    return value


def _age(record: dict[str, Any], path: str) -> dict[str, Any] | None:
    """'18 Years' -> a UCUM Quantity; absent or 'N/A' (no limit) -> None."""
    value = _text(record, path)
    if value is None or value == "N/A":
        return None
    match = _AGE.fullmatch(value)
    if not match:
        raise unprocessable(
            f"{path}: {value!r} is not an age such as '18 Years' (Years, Months, Weeks, Days, Hours or Minutes).",
            path,
            code="value",
        )
    number, unit = match.groups()
    amount: int | float = float(number) if "." in number else int(number)
    return {"value": amount, "unit": f"{unit.lower()}s", "system": UCUM, "code": _AGE_UNITS[unit]}


# --- code tables -------------------------------------------------------------------------------------------


def _translate(concept_maps: ConceptMapIndex, system: str, code: str, path: str, what: str) -> Translation | None:
    """The translation of a registry code; None for a code the map lists as `unmatched`.

    A code the map does not list at all is an error naming `path` and the codes it knows.
    """
    translations = concept_maps.translate(system, code)
    if translations:
        return translations[0]  # our maps give one target per code
    known = source_codes(concept_maps, system)
    if code in known:
        return None
    raise unprocessable(
        f"{path}: {code!r} is not a ClinicalTrials.gov {what} that {concept_map_url(concept_maps, system) or system} "
        f"maps (known: {', '.join(sorted(known))}).",
        path,
        code="code-invalid",
    )


def _concept(translation: Translation | None, text: str) -> dict[str, Any]:
    if translation is None:  # unmatched: text alone is allowed by the extensible binding
        return {"text": text}
    coding = {"system": translation.system, "code": translation.code}
    if translation.display:
        coding["display"] = translation.display
    return {"coding": [coding], "text": text}


def _inexact(concept_maps: ConceptMapIndex, system: str, code: str, comment: str | None) -> dict[str, Any]:
    """The extension that says an element's code is a lossy translation, and of what."""
    parts: list[dict[str, Any]] = [{"url": "source", "valueCoding": {"system": system, "code": code}}]
    url = concept_map_url(concept_maps, system)
    if url:
        parts.append({"url": "conceptMap", "valueCanonical": url})
    if comment:
        parts.append({"url": "comment", "valueString": comment})
    return {"url": INEXACT_TRANSLATION_URL, "extension": parts}


def _label(code: str) -> str:
    """An enum name as the registry displays it: PLACEBO_COMPARATOR -> Placebo Comparator."""
    return _LABELS.get(code) or code.replace("_", " ").title()
