"""Study spec -> FHIR R4: ResearchStudy, its schedule of activities (PlanDefinition), its eligibility
(Group for what a flat Group can say, EvidenceVariable for the full logic).

One small ``to_fhir_*`` function per resource. The output is plain R4 JSON, validated through the core
when it is stored; the R5 views of the same resources are derived from it (app/fhir/r5.py).
"""

from __future__ import annotations

import json
from typing import Any

from app.eligibility.criteria import CodeRef, Criterion, Expression, Window
from app.fhir import bundle
from app.fhir.errors import FhirError
from app.fhir.systems import LOINC, SNOMED
from app.fhir.ucum import UCUM_SYSTEM
from app.mapping.study_spec import StudyRegistry, StudySpec
from app.mapping.study_time import visit_system
from app.store.repository import Store

TB = "https://trialbridge.dev/fhir"
EXT = f"{TB}/StructureDefinition"
NCT_SYSTEM = "http://clinicaltrials.gov"
EUDRACT_SYSTEM = "https://www.clinicaltrialsregister.eu"
CRITERION_KIND_SYSTEM = f"{TB}/CodeSystem/criterion-kind"
CRITERIA_LANGUAGE = "application/x-trialbridge-criteria+json"

ARM_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/research-study-arm-type"
PHASE_SYSTEM = "http://terminology.hl7.org/CodeSystem/research-study-phase"
PURPOSE_SYSTEM = "http://terminology.hl7.org/CodeSystem/research-study-prim-purp-type"
OBJECTIVE_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/research-study-objective-type"

ROUTES = {
    "SC": (SNOMED, "34206005", "Subcutaneous route"),
    "IV": (SNOMED, "47625008", "Intravenous route"),
    "PO": (SNOMED, "26643006", "Oral route"),
    "IM": (SNOMED, "78421000", "Intramuscular route"),
}
# What the Group and EvidenceVariable characteristics are about, when no standard code says it.
CRITERION_KINDS = {
    "condition": "Has a condition (diagnosis) with one of the codes",
    "medication": "Takes or took a medication with one of the codes",
    "other-study": "Takes part in another interventional study",
    "positive-result": "Has a positive result for the test",
}
AGE = (LOINC, "30525-0", "Age")
SEX = (LOINC, "46098-0", "Sex")
PREGNANCY = (SNOMED, "77386006", "Pregnancy")


def study_resources(spec: StudySpec) -> list[dict[str, Any]]:
    """Every R4 resource a study spec gives, with stable ids (PUT them: loading twice changes nothing)."""
    return [
        to_fhir_research_study(spec),
        to_fhir_schedule(spec),
        to_fhir_eligibility_group(spec),
        to_fhir_eligibility_evidence_variable(spec),
        to_fhir_visit_code_system(spec),
    ]


def to_fhir_visit_code_system(spec: StudySpec) -> dict[str, Any]:
    """The study's nominal visits as codes (repeats expanded: course-1, course-2...), the system the
    study-time extension's visit Coding uses."""
    return {
        "resourceType": "CodeSystem",
        "id": f"{spec.id}-visit",
        "url": visit_system(spec.id),
        "name": f"{spec.acronym.replace('-', '')}Visits",
        "title": f"{spec.acronym}: nominal visits",
        "status": "active",
        "content": "complete",
        "property": [
            {"code": "study-day", "description": "nominal study day (relative to the first dose)", "type": "integer"}
        ],
        "concept": [_visit_concept(spec, visit) for visit in spec.schedule],
    }


def _visit_concept(spec: StudySpec, visit: Any) -> dict[str, Any]:
    """A visit; a repeating one is the parent of its occurrences (a file may name either)."""
    day = [{"code": "study-day", "valueInteger": visit.day}]
    if visit.repeat is None:
        return {"code": visit.id, "display": visit.name, "property": day}
    occurrences = [v for v in spec.visits() if v[0].rsplit("-", 1)[0] == visit.id]
    return {
        "code": visit.id,
        "display": f"{visit.name} (every {visit.every} days)",
        "property": day,
        "concept": [
            {"code": v[0], "display": v[1], "property": [{"code": "study-day", "valueInteger": v[2]}]}
            for v in occurrences
        ],
    }


def criterion_kind_code_system() -> dict[str, Any]:
    return {
        "resourceType": "CodeSystem",
        "id": "trialbridge-criterion-kind",
        "url": CRITERION_KIND_SYSTEM,
        "name": "TrialBridgeCriterionKind",
        "title": "Kinds of eligibility criteria without a standard code",
        "status": "active",
        "content": "complete",
        "concept": [{"code": code, "display": display} for code, display in CRITERION_KINDS.items()],
    }


def schedule_id(spec: StudySpec) -> str:
    return f"{spec.id}-soa"


def eligibility_id(spec: StudySpec) -> str:
    return f"{spec.id}-eligibility"


def _coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    return {"system": system, "code": code, **({"display": display} if display else {})}


def _concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    return {"coding": [_coding(system, code, display)]}


def _codes(codes: list[CodeRef]) -> dict[str, Any]:
    """Prefix codes (``icd10|F31.3*``) are written as the class code they stand for (F31.3)."""
    return {"coding": [_coding(c.system, c.code.rstrip("*")) for c in codes]}


def _days(value: float) -> dict[str, Any]:
    return {"value": value, "unit": "days", "system": UCUM_SYSTEM, "code": "d"}


def to_fhir_research_study(spec: StudySpec) -> dict[str, Any]:
    """https://hl7.org/fhir/R4/researchstudy.html; design facts R4 has no element for go in extensions."""
    identifiers = [{"use": "official", "system": NCT_SYSTEM, "value": spec.identifiers.nct}]
    if spec.identifiers.eudract:
        identifiers.append({"use": "secondary", "system": EUDRACT_SYSTEM, "value": spec.identifiers.eudract})
    identifiers += [{"use": "secondary", "value": other} for other in spec.identifiers.other]
    design = spec.design
    extensions: list[dict[str, Any]] = [
        {"url": f"{EXT}/study-acronym", "valueString": spec.acronym},
        {"url": f"{EXT}/allocation", "valueCode": design.allocation},
        {"url": f"{EXT}/masking", "valueCode": design.masking},
        *({"url": f"{EXT}/masked-role", "valueCode": role} for role in design.masked_roles),
        {"url": f"{EXT}/intervention-model", "valueCode": design.model},
        *({"url": f"{EXT}/stratification-factor", "valueString": factor} for factor in design.stratification),
        {"url": f"{EXT}/planned-enrollment", "valueUnsignedInt": spec.planned_enrollment},
        {"url": f"{EXT}/first-dose-day", "valueInteger": spec.first_dose_day},
        {
            "url": f"{EXT}/eligibility-definition",
            "valueReference": {"reference": f"EvidenceVariable/{eligibility_id(spec)}"},
        },
        *(_outcome_measure(measure) for measure in spec.outcome_measures),
    ]
    if design.description:
        extensions.append({"url": f"{EXT}/design-description", "valueString": design.description})
    contained = [{"resourceType": "Organization", "id": "sponsor", "name": spec.sponsor.name}]
    for index, collaborator in enumerate(spec.sponsor.collaborators, 1):
        contained.append({"resourceType": "Organization", "id": f"collaborator-{index}", "name": collaborator})
        extensions.append({"url": f"{EXT}/collaborator", "valueReference": {"reference": f"#collaborator-{index}"}})
    study: dict[str, Any] = {
        "resourceType": "ResearchStudy",
        "id": spec.id,
        "contained": contained,
        "extension": extensions,
        "identifier": identifiers,
        "title": spec.title,
        "protocol": [{"reference": f"PlanDefinition/{schedule_id(spec)}"}],
        "status": spec.status,
        "primaryPurposeType": _concept(PURPOSE_SYSTEM, design.purpose),
        "phase": _concept(PHASE_SYSTEM, spec.phase),
        "condition": [_codes([code]) for code in spec.conditions],
        "keyword": [{"text": keyword} for keyword in spec.keywords],
        "description": spec.description,
        "enrollment": [{"reference": f"Group/{eligibility_id(spec)}"}],
        "period": {k: v for k, v in (("start", spec.period.start), ("end", spec.period.end)) if v},
        "sponsor": {"reference": "#sponsor", "display": spec.sponsor.name},
        "arm": [_arm(spec, arm_id) for arm_id in (a.id for a in spec.arms)],
        "objective": [
            {"id": o.id, "name": o.text, "type": _concept(OBJECTIVE_TYPE_SYSTEM, o.type)} for o in spec.objectives
        ],
    }
    return study


def _arm(spec: StudySpec, arm_id: str) -> dict[str, Any]:
    arm = spec.arm(arm_id)
    interventions = [spec.intervention(i) for i in arm.interventions]
    extensions: list[dict[str, Any]] = []
    if arm.id in spec.design.ratio:
        extensions.append({"url": f"{EXT}/allocation-ratio", "valueInteger": spec.design.ratio[arm.id]})
    for intervention in interventions:
        extensions.append({"url": f"{EXT}/arm-intervention", "extension": _intervention(intervention)})
    return {
        # The element id carries the spec's arm id: R5's comparisonGroup.linkId, and what CSVs name.
        "id": arm.id,
        "extension": extensions,
        "name": arm.name,
        "type": {**_concept(ARM_TYPE_SYSTEM, arm.type), "text": arm.type},
        "description": arm.description,
    }


def _intervention(intervention: Any) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [
        {"url": "id", "valueId": intervention.id},
        {"url": "name", "valueString": intervention.name},
        {"url": "type", "valueCode": intervention.type},
        {"url": "route", "valueCodeableConcept": _concept(*ROUTES[intervention.route])},
        {"url": "regimen", "valueString": intervention.regimen},
    ]
    if intervention.code:
        parts.append({"url": "code", "valueCoding": _coding(intervention.code.system, intervention.code.code)})
    if intervention.dose:
        dose = intervention.dose
        parts.append({"url": "dose", "valueQuantity": {"value": dose.value, "system": UCUM_SYSTEM, "code": dose.unit}})
        parts.append({"url": "dose-per", "valueCode": dose.per})
    return parts


def _outcome_measure(measure: Any) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [
        {"url": "id", "valueId": measure.id},
        {"url": "name", "valueString": measure.name},
        {"url": "type", "valueCodeableConcept": _concept(OBJECTIVE_TYPE_SYSTEM, measure.type)},
        {"url": "timeFrame", "valueString": measure.time_frame},
    ]
    if measure.description:
        parts.append({"url": "description", "valueString": measure.description})
    if measure.measure:
        parts.append({"url": "measure", "valueCoding": _coding(measure.measure.system, measure.measure.code)})
    return {"url": f"{EXT}/outcome-measure", "extension": parts}


def to_fhir_schedule(spec: StudySpec) -> dict[str, Any]:
    """The schedule of activities as the HL7 Vulcan SoA IG shapes it: a PlanDefinition whose actions are the
    visits, each placed by relatedAction offsets from the first-dose visit, with the activities nested.
    https://build.fhir.org/ig/HL7/vulcan-schedule-ig/"""
    activities = {a.id: a for a in spec.activities}
    anchor = next((v for v in spec.visits() if v[2] == spec.first_dose_day), None)
    actions = []
    by_id = {v.id: v for v in spec.schedule}
    for visit_id, name, day, before, after in spec.visits():
        base = by_id.get(visit_id) or by_id[visit_id.rsplit("-", 1)[0]]
        action: dict[str, Any] = {
            "id": visit_id,
            "extension": [
                {"url": f"{EXT}/study-day", "valueInteger": day},
                {"url": f"{EXT}/visit-window", "valueRange": {"low": _days(day - before), "high": _days(day + after)}},
            ],
            "title": name,
        }
        if anchor is not None and visit_id != anchor[0]:
            low, high = spec.days_after_first_dose(day - before), spec.days_after_first_dose(day + after)
            relationship = "after-start" if low >= 0 else "before-start"
            if relationship == "before-start":
                low, high = -high, -low
            action["relatedAction"] = [
                {
                    "actionId": anchor[0],
                    "relationship": relationship,
                    "offsetRange": {"low": _days(max(low, 0)), "high": _days(max(high, 0))},
                }
            ]
        nested = []
        for activity_id in base.activities:
            activity = activities[activity_id]
            item: dict[str, Any] = {"id": f"{visit_id}.{activity_id}", "title": activity.name}
            if activity.code:
                item["code"] = [_concept(activity.code.system, activity.code.code)]
            nested.append(item)
        if nested:
            action["action"] = nested
        actions.append(action)
    return {
        "resourceType": "PlanDefinition",
        "id": schedule_id(spec),
        "url": f"{TB}/PlanDefinition/{schedule_id(spec)}",
        "name": f"{spec.acronym.replace('-', '')}ScheduleOfActivities",
        "title": f"{spec.acronym}: schedule of activities",
        "type": _concept("http://terminology.hl7.org/CodeSystem/plan-definition-type", "clinical-protocol"),
        "status": "active",
        "description": "Visits as study days relative to the first dose, with their windows and activities.",
        "action": actions,
    }


# ------------------------------------------------------------------------------------------- eligibility


def to_fhir_eligibility_group(spec: StudySpec) -> dict[str, Any]:
    """R4 Group (actual=false): one characteristic per criterion a flat AND of (code, value, exclude) can state.

    Composites, windows and manual criteria are not expressible here; the EvidenceVariable carries them.
    """
    characteristics = []
    for criterion in spec.eligibility.criteria:
        if criterion.expression is None:
            continue
        flat = _flat_characteristic(criterion.expression, exclude=criterion.type == "exclusion")
        if flat is not None:
            characteristics.append({"extension": [{"url": f"{EXT}/criterion-id", "valueId": criterion.id}], **flat})
    return {
        "resourceType": "Group",
        "id": eligibility_id(spec),
        "name": f"{spec.acronym} eligibility (computable criteria, flat)",
        "type": "person",
        "actual": False,
        "characteristic": characteristics,
    }


def _flat_characteristic(expression: Expression, *, exclude: bool) -> dict[str, Any] | None:
    kind, node = expression.kind, expression.node
    if kind == "not":
        return _flat_characteristic(node, exclude=not exclude)
    value: dict[str, Any]  # one value[x] entry: valueRange, valueCodeableConcept, valueBoolean or valueQuantity
    if kind == "age":
        value = {"valueRange": _age_range(node)}
        code = _concept(*AGE)
    elif kind == "sex":
        value = {
            "valueCodeableConcept": {
                "coding": [_coding("http://hl7.org/fhir/administrative-gender", s) for s in node.administrative]
            }
        }
        code = _concept(*SEX)
    elif kind in ("condition", "medication"):
        code = _concept(CRITERION_KIND_SYSTEM, kind)
        value = {"valueCodeableConcept": _codes(node.codes)}
    elif kind == "observation":
        code = _codes(node.codes)
        if node.positive is not None:
            value = {"valueBoolean": node.positive}
        else:
            value = {"valueQuantity": _threshold(node.comparator, node.value, node.unit)}
    elif kind == "pregnancy":
        code, value = _concept(*PREGNANCY), {"valueBoolean": True}
    elif kind == "other_study":
        code, value = _concept(CRITERION_KIND_SYSTEM, "other-study"), {"valueBoolean": True}
    else:
        return None  # all_of / any_of / at_least: not a flat characteristic
    return {"code": code, **value, "exclude": exclude}


def _threshold(comparator: str | None, value: float | None, unit: str | None) -> dict[str, Any]:
    quantity: dict[str, Any] = {"value": value, "unit": unit, "system": UCUM_SYSTEM, "code": unit}
    if comparator and comparator != "=":
        quantity = {"comparator": comparator, **quantity}
    return quantity


def _age_range(age: Any) -> dict[str, Any]:
    years = {"unit": "years", "system": UCUM_SYSTEM, "code": "a"}
    age_range: dict[str, Any] = {}
    if age.min is not None:
        age_range["low"] = {"value": age.min, **years}
    high = age.max if age.max is not None else (age.below - 1 if age.below is not None else None)
    if high is not None:
        age_range["high"] = {"value": high, **years}
    return age_range


def to_fhir_eligibility_evidence_variable(spec: StudySpec) -> dict[str, Any]:
    """R4 EvidenceVariable: every criterion, in order, with its registry text; computable ones carry their
    expression in the criteria language (definitionExpression), manual ones say why they need a person.
    The R5 view turns the expressions into nested all-of / any-of characteristics."""
    return {
        "resourceType": "EvidenceVariable",
        "id": eligibility_id(spec),
        "url": f"{TB}/EvidenceVariable/{eligibility_id(spec)}",
        "name": f"{spec.acronym.replace('-', '')}Eligibility",
        "title": f"{spec.acronym} eligibility criteria",
        "status": "active",
        "description": f"Inclusion and exclusion criteria of {spec.acronym} ({spec.identifiers.nct}).",
        "characteristic": [_criterion_characteristic(c) for c in spec.eligibility.criteria],
    }


def _criterion_characteristic(criterion: Criterion) -> dict[str, Any]:
    characteristic: dict[str, Any] = {
        "extension": [
            {"url": f"{EXT}/criterion-id", "valueId": criterion.id},
            {"url": f"{EXT}/criterion-type", "valueCode": criterion.type},
        ],
        "description": criterion.text,
    }
    if criterion.expression is not None:
        characteristic["definitionExpression"] = {
            "language": CRITERIA_LANGUAGE,
            "expression": json.dumps(
                criterion.expression.model_dump(mode="json", by_alias=True, exclude_defaults=True)
            ),
        }
    else:
        characteristic["extension"].append({"url": f"{EXT}/manual-review", "valueString": criterion.reason})
        characteristic["definitionCodeableConcept"] = {"text": f"Manual review: {criterion.reason}"}
    characteristic["exclude"] = criterion.type == "exclusion"
    return characteristic


def window_text(window: Window) -> str:
    for unit in ("days", "months", "years"):
        value = getattr(window, unit)
        if value is not None:
            return f"{value} {unit[:-1] if value == 1 else unit}"
    return ""


# ------------------------------------------------------------------------------------ R5 EvidenceVariable


def r5_definition(language: str, expression: str) -> dict[str, Any] | None:
    """The R5 EvidenceVariable characteristic definition of a stored criteria expression (None: not ours)."""
    if language != CRITERIA_LANGUAGE:
        return None
    return _r5_node(Expression.model_validate(json.loads(expression)))


def _r5_node(expression: Expression) -> dict[str, Any]:
    """One expression node as R5 definition elements: definitionByCombination for all-of / any-of /
    at-least, definitionByTypeAndValue for a leaf, `exclude` for not, timeFromEvent for windows."""
    kind, node = expression.kind, expression.node
    if kind in ("all_of", "any_of"):
        return _combination(kind.replace("_", "-"), node)
    if kind == "at_least":
        return _combination("at-least", node.of, threshold=node.n)
    if kind == "not":
        inner = _r5_node(node)
        return {**inner, "exclude": not inner.get("exclude", False)}
    if kind == "age":
        return _type_and_value(AGE, {"valueRange": _age_range(node)})
    if kind == "sex":
        gender = "http://hl7.org/fhir/administrative-gender"
        return _type_and_value(
            SEX, {"valueCodeableConcept": {"coding": [_coding(gender, s) for s in node.administrative]}}
        )
    if kind == "condition":
        leaf = _type_and_value((CRITERION_KIND_SYSTEM, "condition", None), {"valueCodeableConcept": _codes(node.codes)})
        _window(leaf, node.within, "condition onset")
        if node.exceptions:
            exceptions = _type_and_value(
                (CRITERION_KIND_SYSTEM, "condition", None), {"valueCodeableConcept": _codes(node.exceptions)}
            )
            return {
                "definitionByCombination": {"code": "all-of", "characteristic": [leaf, {**exceptions, "exclude": True}]}
            }
        return leaf
    if kind == "observation":
        if node.positive is not None:
            leaf = _type_and_value(None, {"valueBoolean": node.positive}, type_concept=_codes(node.codes))
        else:
            leaf = _type_and_value(
                None,
                {"valueQuantity": _threshold(node.comparator, node.value, node.unit)},
                type_concept=_codes(node.codes),
            )
        _window(leaf, node.lookback, "observation")
        if node.alternatives:
            others = [
                _type_and_value(
                    None,
                    {"valueQuantity": _threshold(node.comparator, alt.value, alt.unit)},
                    type_concept=_codes(node.codes),
                )
                for alt in node.alternatives
            ]
            for other in others:
                _window(other, node.lookback, "observation")
            return {"definitionByCombination": {"code": "any-of", "characteristic": [leaf, *others]}}
        return leaf
    if kind == "medication":
        leaf = _type_and_value(
            (CRITERION_KIND_SYSTEM, "medication", None), {"valueCodeableConcept": _codes(node.codes)}
        )
        _window(leaf, node.within, "medication use")
        if node.min_duration is not None:
            leaf["durationQuantity"] = _window_quantity(node.min_duration)
        return leaf
    if kind == "pregnancy":
        leaf = _type_and_value(PREGNANCY, {"valueBoolean": True})
        _window(leaf, node.within, "pregnancy or lactation")
        return leaf
    leaf = _type_and_value((CRITERION_KIND_SYSTEM, "other-study", None), {"valueBoolean": True})
    _window(leaf, node.within, "participation")
    return leaf


def _combination(code: str, children: list[Expression], threshold: int | None = None) -> dict[str, Any]:
    combination: dict[str, Any] = {"code": code}
    if threshold is not None:
        combination["threshold"] = threshold
    combination["characteristic"] = [_r5_node(child) for child in children]
    return {"definitionByCombination": combination}


def _type_and_value(
    code: tuple[str, str, str | None] | None, value: dict[str, Any], type_concept: dict[str, Any] | None = None
) -> dict[str, Any]:
    concept = type_concept if type_concept is not None else _concept(*code) if code else {}
    return {"definitionByTypeAndValue": {"type": concept, **value}}


def _window_quantity(window: Window) -> dict[str, Any]:
    for unit, code in (("days", "d"), ("months", "mo"), ("years", "a")):
        value = getattr(window, unit)
        if value is not None:
            return {"value": value, "unit": unit, "system": UCUM_SYSTEM, "code": code}
    raise AssertionError("a window has one unit")


def _window(leaf: dict[str, Any], window: Window | None, what: str) -> None:
    """R5 timeFromEvent: the characteristic holds from `window` before the screening date up to it."""
    if window is None:
        return
    quantity = _window_quantity(window)
    leaf["timeFromEvent"] = [
        {
            "description": f"{what} within {window_text(window)} before the screening date",
            "eventCodeableConcept": {"text": "screening date"},
            "range": {"low": {**quantity, "value": -quantity["value"]}, "high": {**quantity, "value": 0}},
        }
    ]


def install_studies(store: Store, studies: StudyRegistry, base_url: str = "http://127.0.0.1:8000/fhir") -> int:
    """PUT every study's resources (and the criterion-kind CodeSystem) in one transaction; idempotent:
    an unchanged PUT writes no new version. Returns the number of entries processed."""
    resources = [criterion_kind_code_system()]
    for spec in studies:
        resources += study_resources(spec)
    return install_resources(store, resources, base_url)


def install_resources(
    store: Store, resources: list[dict[str, Any]], base_url: str = "http://127.0.0.1:8000/fhir"
) -> int:
    """PUT resources with their ids in one transaction (an unchanged PUT writes nothing); entries processed."""
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources
        ],
    }
    response = bundle.process(store, transaction, bundle.BundleOptions(base_url))
    return len(response.get("entry", []))


def study_arms(store: Store, study_reference: str) -> list[dict[str, Any]] | None:
    """The R4 arms of a stored ResearchStudy (`ResearchStudy/{id}`), for R5 comparison-group links."""
    resource_type, _, res_id = study_reference.partition("/")
    if resource_type != "ResearchStudy" or not res_id:
        return None
    try:
        content = store.read(resource_type, res_id).content
    except FhirError:
        return None
    return list((content or {}).get("arm", []))
