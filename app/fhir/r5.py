"""R5 views of the R4 resources trials care about: ResearchStudy, ResearchSubject, EvidenceVariable.

The store holds R4. A client that asks for `fhirVersion=5.0` gets these types converted on the way out,
and may send them as R5 on the way in (converted to R4 before validation and storage). The conversions
are lossless for what this server writes: R4 elements without an R5 home travel in the HL7 cross-version
extensions (``http://hl7.org/fhir/4.0/StructureDefinition/extension-<Type>.<element>``), and back.
Differences: https://hl7.org/fhir/R5/researchstudy.html#mappings, https://hl7.org/fhir/R5/researchsubject.html.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from app.fhir.errors import FhirError, Issue
from app.fhir.validation import issues_from_pydantic
from app.fhir.version import r5_model_class

R5_TYPES = frozenset({"ResearchStudy", "ResearchSubject", "EvidenceVariable"})
# Resource types whose JSON is the same in R4 and R5 for what this server puts in them.
SAME_IN_R5 = frozenset({"OperationOutcome"})

STUDY_STATUS = "http://hl7.org/fhir/research-study-status"
SUBJECT_STATE = "http://hl7.org/fhir/research-subject-state"
SUBJECT_STATE_TYPE = "http://hl7.org/fhir/research-subject-state-type"
PARTY_ROLE = "http://hl7.org/fhir/research-study-party-role"
R4_ELEMENT = "http://hl7.org/fhir/4.0/StructureDefinition/extension-"
TB_EXT = "https://trialbridge.dev/fhir/StructureDefinition"
PLANNED_ENROLLMENT = f"{TB_EXT}/planned-enrollment"
ELIGIBILITY_DEFINITION = f"{TB_EXT}/eligibility-definition"
OUTCOME_MEASURE = f"{TB_EXT}/outcome-measure"
COLLABORATOR = f"{TB_EXT}/collaborator"
CRITERION_ID = f"{TB_EXT}/criterion-id"
# R5 `status` is the record's publication status; the R4 lifecycle lives in progressStatus.
_PUBLICATION_TO_R4 = {"active": "active", "draft": "in-review", "retired": "completed"}


@dataclass
class R5Context:
    """What a conversion needs from outside the resource: the arms of a study (R4 assignedArm is an arm's
    name, R5 assignedComparisonGroup its linkId) and the R5 form of a criteria expression."""

    study_arms: Callable[[str], list[dict[str, Any]] | None] = lambda _ref: None
    expression_definition: Callable[[str, str], dict[str, Any] | None] = lambda _lang, _expr: None
    _arms_cache: dict[str, list[dict[str, Any]] | None] = field(default_factory=dict)

    def arms(self, study_reference: str) -> list[dict[str, Any]]:
        if study_reference not in self._arms_cache:
            self._arms_cache[study_reference] = self.study_arms(study_reference)
        return self._arms_cache[study_reference] or []


def convertible(resource_type: str) -> bool:
    return resource_type in R5_TYPES or resource_type in SAME_IN_R5


def to_r5(resource: dict[str, Any], context: R5Context) -> dict[str, Any]:
    """The R5 form of an R4 resource (or of a Bundle of them); FhirError 406 for a type without an R5 view."""
    resource_type = resource.get("resourceType")
    if resource_type == "Bundle":
        converted = dict(resource)
        converted["entry"] = [
            {**entry, "resource": to_r5(entry["resource"], context)} if "resource" in entry else entry
            for entry in resource.get("entry", [])
        ]
        return converted
    if resource_type in SAME_IN_R5:
        return resource
    converter = _TO_R5.get(str(resource_type))
    if converter is None:
        raise not_in_r5(str(resource_type))
    return converter(copy.deepcopy(resource), context)


def to_r4(resource: dict[str, Any], context: R5Context) -> dict[str, Any]:
    """The R4 form of an R5 resource this server accepts as R5; FhirError 415 for other types."""
    resource_type = str(resource.get("resourceType"))
    converter = _TO_R4.get(resource_type)
    if converter is None:
        raise not_accepted_as_r5(resource_type)
    validate_r5(resource)
    return converter(copy.deepcopy(resource), context)


def not_accepted_as_r5(resource_type: str) -> FhirError:
    return FhirError(
        415,
        [
            Issue(
                "not-supported",
                f"{resource_type} is accepted as FHIR R4 only; R5 (fhirVersion=5.0) is accepted for "
                f"{', '.join(sorted(R5_TYPES))}.",
                ("Content-Type",),
            )
        ],
    )


def not_in_r5(resource_type: str) -> FhirError:
    return FhirError(
        406,
        [
            Issue(
                "not-supported",
                f"{resource_type} is served as FHIR R4 only; R5 views (Accept: application/fhir+json; "
                f"fhirVersion=5.0) exist for {', '.join(sorted(R5_TYPES))}. Ask for fhirVersion=4.0.",
                ("Accept",),
            )
        ],
    )


def validate_r5(resource: dict[str, Any]) -> None:
    """Validate against the fhir.resources R5 model; FhirError 422 listing every problem with its path."""
    resource_type = str(resource.get("resourceType"))
    try:
        r5_model_class(resource_type).model_validate(resource)
    except ValidationError as error:
        raise FhirError(422, issues_from_pydantic(resource_type, error)) from None


# ------------------------------------------------------------------------------------------------ helpers


def _pop_extensions(resource: dict[str, Any], url: str) -> list[dict[str, Any]]:
    extensions = resource.get("extension", [])
    taken = [e for e in extensions if e.get("url") == url]
    if taken:
        rest = [e for e in extensions if e.get("url") != url]
        if rest:
            resource["extension"] = rest
        else:
            resource.pop("extension")
    return taken


def _add_extension(resource: dict[str, Any], extension: dict[str, Any]) -> None:
    resource.setdefault("extension", []).append(extension)


def _carry(resource: dict[str, Any], resource_type: str, element: str, value_key: str) -> None:
    """Move an R4 element without an R5 home into its cross-version extension(s)."""
    if element not in resource:
        return
    values = resource.pop(element)
    for value in values if isinstance(values, list) else [values]:
        _add_extension(resource, {"url": f"{R4_ELEMENT}{resource_type}.{element}", value_key: value})


def _restore(resource: dict[str, Any], resource_type: str, element: str, value_key: str, *, many: bool) -> None:
    taken = _pop_extensions(resource, f"{R4_ELEMENT}{resource_type}.{element}")
    if taken:
        values = [e[value_key] for e in taken]
        resource[element] = values if many else values[0]


def _concept(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def _code_in(concept: dict[str, Any] | None, system: str) -> str | None:
    for coding in (concept or {}).get("coding", []):
        if coding.get("system") == system and coding.get("code"):
            return str(coding["code"])
    return None


def _invalid(message: str, expression: str) -> FhirError:
    return FhirError(422, [Issue("value", message, (expression,))])


# ---------------------------------------------------------------------------------------- ResearchStudy

_PARTY_ELEMENTS = (("sponsor", "sponsor"), ("principalInvestigator", "primary-investigator"))


def _research_study_to_r5(study: dict[str, Any], _context: R5Context) -> dict[str, Any]:
    status = study.pop("status", None)
    study["status"] = "active"
    if status:
        study["progressStatus"] = [{"state": _concept(STUDY_STATUS, status), "actual": True}]
    parties = []
    for element, role in _PARTY_ELEMENTS:
        if element in study:
            reference = study.pop(element)
            party = {"role": _concept(PARTY_ROLE, role), "party": reference}
            if reference.get("display"):
                party = {"name": reference["display"], **party}
            parties.append(party)
    for extension in _pop_extensions(study, COLLABORATOR):
        parties.append({"role": _concept(PARTY_ROLE, "collaborator"), "party": extension["valueReference"]})
    if parties:
        study["associatedParty"] = parties
    if "category" in study:
        study["classifier"] = study.pop("category")
    if "location" in study:
        study["region"] = study.pop("location")
    if "reasonStopped" in study:
        study["whyStopped"] = study.pop("reasonStopped")
    recruitment: dict[str, Any] = {}
    for extension in _pop_extensions(study, PLANNED_ENROLLMENT):
        recruitment["targetNumber"] = extension["valueUnsignedInt"]
    for extension in _pop_extensions(study, ELIGIBILITY_DEFINITION):
        recruitment["eligibility"] = extension["valueReference"]
    if "eligibility" not in recruitment and len(study.get("enrollment", [])) == 1:
        recruitment["eligibility"] = study.pop("enrollment")[0]
    _carry(study, "ResearchStudy", "enrollment", "valueReference")
    _carry(study, "ResearchStudy", "contact", "valueContactDetail")
    if recruitment:
        study["recruitment"] = recruitment
    if "arm" in study:
        study["comparisonGroup"] = [_arm_to_r5(arm) for arm in study.pop("arm")]
    measures = [_outcome_measure_to_r5(e) for e in _pop_extensions(study, OUTCOME_MEASURE)]
    if measures:
        study["outcomeMeasure"] = measures
    return study


def _arm_to_r5(arm: dict[str, Any]) -> dict[str, Any]:
    group = dict(arm)
    if "id" in arm:
        group["linkId"] = arm["id"]
    return group


def _outcome_measure_to_r5(extension: dict[str, Any]) -> dict[str, Any]:
    parts = {part["url"]: part for part in extension.get("extension", [])}
    measure: dict[str, Any] = {}
    if "id" in parts:
        measure["id"] = parts.pop("id")["valueId"]
    rest = [
        {**part, "url": f"{OUTCOME_MEASURE}-{url}"}
        for url, part in parts.items()
        if url not in ("name", "type", "description")
    ]
    if rest:
        measure["extension"] = rest
    if "name" in parts:
        measure["name"] = parts["name"]["valueString"]
    if "type" in parts:
        measure["type"] = [parts["type"]["valueCodeableConcept"]]
    if "description" in parts:
        measure["description"] = parts["description"]["valueString"]
    return measure


def _research_study_to_r4(study: dict[str, Any], _context: R5Context) -> dict[str, Any]:
    states = [p for p in study.pop("progressStatus", []) if _code_in(p.get("state"), STUDY_STATUS)]
    actual = [p for p in states if p.get("actual")] or states
    publication = study.pop("status", None)
    if actual:
        study["status"] = _code_in(actual[-1]["state"], STUDY_STATUS)
    elif publication in _PUBLICATION_TO_R4:
        study["status"] = _PUBLICATION_TO_R4[publication]
    else:
        raise _invalid(
            "R4 needs the study's lifecycle status: give a progressStatus whose state is a "
            f"{STUDY_STATUS} code (actual=true), or status active, draft or retired.",
            "ResearchStudy.progressStatus",
        )
    for index, party in enumerate(study.pop("associatedParty", [])):
        role = _code_in(party.get("role"), PARTY_ROLE)
        reference = dict(party.get("party") or {})
        if party.get("name") and "display" not in reference:
            reference["display"] = party["name"]
        element = {"sponsor": "sponsor", "lead-sponsor": "sponsor", "primary-investigator": "principalInvestigator"}
        if role in element and element[role] not in study:
            study[element[role]] = reference
        elif role == "collaborator" and reference.get("reference"):
            _add_extension(study, {"url": COLLABORATOR, "valueReference": reference})
        else:
            raise _invalid(
                f"associatedParty[{index}] (role {role!r}) has no place in R4 ResearchStudy, which holds one "
                "sponsor, one principal investigator and collaborators (as references).",
                f"ResearchStudy.associatedParty[{index}]",
            )
    if "classifier" in study:
        study["category"] = study.pop("classifier")
    if "region" in study:
        study["location"] = study.pop("region")
    if "whyStopped" in study:
        study["reasonStopped"] = study.pop("whyStopped")
    _restore(study, "ResearchStudy", "enrollment", "valueReference", many=True)
    _restore(study, "ResearchStudy", "contact", "valueContactDetail", many=True)
    recruitment = study.pop("recruitment", {})
    if "targetNumber" in recruitment:
        _add_extension(study, {"url": PLANNED_ENROLLMENT, "valueUnsignedInt": recruitment["targetNumber"]})
    eligibility = recruitment.get("eligibility")
    if eligibility:
        if str(eligibility.get("reference", "")).startswith("Group/"):
            study.setdefault("enrollment", []).insert(0, eligibility)
        else:
            _add_extension(study, {"url": ELIGIBILITY_DEFINITION, "valueReference": eligibility})
    if "comparisonGroup" in study:
        study["arm"] = [_arm_to_r4(group, i) for i, group in enumerate(study.pop("comparisonGroup"))]
    for measure in study.pop("outcomeMeasure", []):
        _add_extension(study, _outcome_measure_to_r4(measure))
    _check_dropped(
        study,
        "ResearchStudy",
        ("descriptionSummary", "label", "result", "studyDesign", "url", "version", "name", "date"),
    )
    return study


def _arm_to_r4(group: dict[str, Any], index: int) -> dict[str, Any]:
    arm = {k: v for k, v in group.items() if k not in ("linkId", "intendedExposure", "observedGroup")}
    if "linkId" in group:
        arm["id"] = group["linkId"]
    if "name" not in arm:
        raise _invalid("R4 arms need a name.", f"ResearchStudy.comparisonGroup[{index}].name")
    return arm


def _outcome_measure_to_r4(measure: dict[str, Any]) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if "id" in measure:
        parts.append({"url": "id", "valueId": measure["id"]})
    if "name" in measure:
        parts.append({"url": "name", "valueString": measure["name"]})
    if measure.get("type"):
        parts.append({"url": "type", "valueCodeableConcept": measure["type"][0]})
    for extension in measure.get("extension", []):
        url = str(extension["url"])
        if url.startswith(f"{OUTCOME_MEASURE}-"):
            parts.append({**extension, "url": url.removeprefix(f"{OUTCOME_MEASURE}-")})
    if "description" in measure:
        parts.append({"url": "description", "valueString": measure["description"]})
    return {"url": OUTCOME_MEASURE, "extension": parts}


def _check_dropped(resource: dict[str, Any], resource_type: str, elements: tuple[str, ...]) -> None:
    present = [e for e in elements if e in resource]
    if present:
        raise _invalid(
            f"{', '.join(present)} cannot be stored: R4 {resource_type} has no such element(s); send them as "
            "extensions or leave them out.",
            f"{resource_type}.{present[0]}",
        )


# -------------------------------------------------------------------------------------- ResearchSubject


def _research_subject_to_r5(subject: dict[str, Any], context: R5Context) -> dict[str, Any]:
    status = subject.pop("status", None)
    subject["status"] = "active"
    if status:
        progress: dict[str, Any] = {
            "type": _concept(SUBJECT_STATE_TYPE, "Enrollment"),
            "subjectState": _concept(SUBJECT_STATE, status),
        }
        if subject.get("period", {}).get("start"):
            progress["startDate"] = subject["period"]["start"]
        subject["progress"] = [progress]
    if "individual" in subject:
        subject["subject"] = subject.pop("individual")
    arms = context.arms(str(subject.get("study", {}).get("reference", "")))
    for r4_name, r5_name in (("assignedArm", "assignedComparisonGroup"), ("actualArm", "actualComparisonGroup")):
        if r4_name not in subject:
            continue
        link_id = next((a.get("id") for a in arms if a.get("name") == subject[r4_name] and a.get("id")), None)
        if link_id is None:
            _carry(subject, "ResearchSubject", r4_name, "valueString")
        else:
            subject.pop(r4_name)
            subject[r5_name] = link_id
    if "consent" in subject:
        subject["consent"] = [subject["consent"]]
    return subject


def _research_subject_to_r4(subject: dict[str, Any], context: R5Context) -> dict[str, Any]:
    states = [p for p in subject.pop("progress", []) if _code_in(p.get("subjectState"), SUBJECT_STATE)]
    subject.pop("status", None)
    if not states:
        raise _invalid(
            f"R4 needs the subject's status: give a progress entry whose subjectState is a {SUBJECT_STATE} code.",
            "ResearchSubject.progress",
        )
    latest = max(enumerate(states), key=lambda item: (str(item[1].get("startDate", "")), item[0]))[1]
    subject["status"] = _code_in(latest["subjectState"], SUBJECT_STATE)
    if "subject" in subject:
        subject["individual"] = subject.pop("subject")
    arms = context.arms(str(subject.get("study", {}).get("reference", "")))
    for r4_name, r5_name in (("assignedArm", "assignedComparisonGroup"), ("actualArm", "actualComparisonGroup")):
        _restore(subject, "ResearchSubject", r4_name, "valueString", many=False)
        if r5_name not in subject:
            continue
        link_id = subject.pop(r5_name)
        name = next((a.get("name") for a in arms if a.get("id") == link_id), None)
        if name is None:
            raise _invalid(
                f"{r5_name} {link_id!r} is not a comparison group of {subject.get('study', {}).get('reference')}: "
                f"known linkIds are {', '.join(str(a.get('id')) for a in arms if a.get('id')) or 'none'}.",
                f"ResearchSubject.{r5_name}",
            )
        subject[r4_name] = name
    consents = subject.pop("consent", [])
    if len(consents) > 1:
        raise _invalid("R4 ResearchSubject holds one consent.", "ResearchSubject.consent[1]")
    if consents:
        subject["consent"] = consents[0]
    return subject


# ------------------------------------------------------------------------------------- EvidenceVariable


def _evidence_variable_to_r5(variable: dict[str, Any], context: R5Context) -> dict[str, Any]:
    variable["characteristic"] = [_characteristic_to_r5(c, context) for c in variable.get("characteristic", [])]
    return variable


def _characteristic_to_r5(characteristic: dict[str, Any], context: R5Context) -> dict[str, Any]:
    converted = dict(characteristic)
    criterion = next(
        (e.get("valueId") for e in characteristic.get("extension", []) if e.get("url") == CRITERION_ID), None
    )
    if criterion:
        converted["linkId"] = criterion
    definition = _expression_definition(characteristic, context)
    if definition:
        # The expression stays (R5 allows it beside one structured definition), so R4 round trips keep it.
        # A top-level `not` flips the characteristic's own exclude: exclude XOR not.
        exclude = bool(characteristic.get("exclude")) != bool(definition.get("exclude"))
        converted.update({k: v for k, v in definition.items() if k != "exclude"})
        converted["exclude"] = exclude
    return converted


def _expression_definition(characteristic: dict[str, Any], context: R5Context) -> dict[str, Any] | None:
    expression = characteristic.get("definitionExpression")
    if not expression:
        return None
    return context.expression_definition(str(expression.get("language")), str(expression.get("expression")))


def _evidence_variable_to_r4(variable: dict[str, Any], context: R5Context) -> dict[str, Any]:
    characteristics = []
    for index, characteristic in enumerate(variable.get("characteristic", [])):
        definition = _expression_definition(characteristic, context)
        derived = set(definition or ()) | {"linkId"}  # what the R5 view computed from the expression
        converted = {
            k: v
            for k, v in characteristic.items()
            if k not in derived
            and k not in ("definitionByTypeAndValue", "definitionByCombination", "definitionId", "note")
        }
        if definition is not None:
            converted["exclude"] = bool(characteristic.get("exclude")) != bool(definition.get("exclude"))
        if not any(k.startswith("definition") for k in converted):
            raise _invalid(
                "R4 EvidenceVariable characteristics need a definitionExpression, definitionCodeableConcept, "
                "definitionReference or definitionCanonical; nested definitionByCombination has no R4 form.",
                f"EvidenceVariable.characteristic[{index}]",
            )
        characteristics.append(converted)
    variable["characteristic"] = characteristics
    _check_dropped(variable, "EvidenceVariable", ("actual", "handling", "category"))
    return variable


_TO_R5: dict[str, Callable[[dict[str, Any], R5Context], dict[str, Any]]] = {
    "ResearchStudy": _research_study_to_r5,
    "ResearchSubject": _research_subject_to_r5,
    "EvidenceVariable": _evidence_variable_to_r5,
}
_TO_R4: dict[str, Callable[[dict[str, Any], R5Context], dict[str, Any]]] = {
    "ResearchStudy": _research_study_to_r4,
    "ResearchSubject": _research_subject_to_r4,
    "EvidenceVariable": _evidence_variable_to_r4,
}
