"""The measure CodeSystem and alias ConceptMaps: their content, publication, and normalisation on every write."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.mapping.terminology import (
    MEASURE_SYSTEM,
    Terminology,
    TerminologyError,
    install_terminology,
    load_terminology,
)
from app.store.db import make_engine, migrate
from app.store.repository import Store

MAPPINGS = Settings().mappings_dir
LOCAL_LAB = "https://trialbridge.dev/fhir/CodeSystem/local-lab"
HOSPITAL = "urn:oid:2.999.1.1.1"
LOINC = "http://loinc.org"

# domain.md section 2, the measure table: code -> (display, unit)
DOMAIN_TABLE = {
    "treg-pct-cd4": ("Regulatory T cells (CD4+CD25+FOXP3+) / CD4+ T cells", "%"),
    "treg-count": ("Regulatory T cells (CD4+CD25+FOXP3+) [#/volume] in blood", "/uL"),
    "nfl-csf": ("Neurofilament light chain [mass/volume] in CSF", "pg/mL"),
    "pnfh-csf": ("Phosphorylated neurofilament heavy chain [mass/volume] in CSF", "pg/mL"),
    "pnfh-serum": ("Phosphorylated neurofilament heavy chain [mass/volume] in serum", "pg/mL"),
    "madrs-total": ("MADRS total score (0\u201360)", "{score}"),
    **{f"madrs-item-{n}": (None, "{score}") for n in range(1, 11)},
    "ids-c30-total": ("IDS-C30 total score (0\u201384)", "{score}"),
    "selena-sledai": ("SELENA-SLEDAI score", "{score}"),
    "svc-pct-pred": ("Slow vital capacity, % of predicted", "%"),
}
TREG_PCT = {"system": MEASURE_SYSTEM, "code": "treg-pct-cd4", "display": DOMAIN_TABLE["treg-pct-cd4"][0]}


@pytest.fixture(scope="module")
def terminology() -> Terminology:
    return load_terminology(MAPPINGS)


def observation(*codings: dict[str, str], value: float = 4.2, unit: str = "%", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": list(codings), "text": "as the lab wrote it"},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-03-04T09:30:00+01:00",
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
        **extra,
    }


def content(resource: dict[str, Any]) -> dict[str, Any]:
    """A stored resource without what the server adds (id, meta)."""
    return {k: v for k, v in resource.items() if k not in ("id", "meta")}


# ----------------------------------------------------------------------------------------------- content


def test_every_measure_of_the_domain_table_is_defined_with_its_unit(terminology: Terminology) -> None:
    for code, (display, unit) in DOMAIN_TABLE.items():
        measure = terminology.measure(code)
        assert measure.unit == unit, code
        if display is not None:
            assert measure.display == display
    assert terminology.measure("madrs-item-10").display == "MADRS item 10 (0\u20136): suicidal thoughts"


def test_scale_ranges_and_the_codes_the_imports_need(terminology: Terminology) -> None:
    ranges = {
        "madrs-total": (0, 60),
        "madrs-item-1": (0, 6),
        "ids-c30-total": (0, 84),
        "ids-c30-item-30": (0, 3),
        "alsfrs-r-total": (0, 48),
        "alsfrs-r-item-12": (0, 4),
        "selena-sledai": (0, 105),
    }
    for code, (low, high) in ranges.items():
        measure = terminology.measure(code)
        assert (measure.min, measure.max, measure.unit) == (Decimal(low), Decimal(high), "{score}"), code
    assert terminology.measure("pnfh-csf").min is None and terminology.measure("pnfh-csf").max is None
    codes = {m.code for m in terminology.measures()}
    expected = (
        set(DOMAIN_TABLE)
        | {f"ids-c30-item-{n}" for n in range(1, 31)}
        | {"alsfrs-r-total"}
        | {f"alsfrs-r-item-{n}" for n in range(1, 13)}
    )
    assert codes == expected
    with pytest.raises(KeyError):
        terminology.measure("ana")


def test_every_local_lab_code_maps_to_one_standard_code(terminology: Terminology) -> None:
    expected = {
        "WBC": (LOINC, "6690-2"),
        "PLT": (LOINC, "777-3"),
        "HGB": (LOINC, "718-7"),
        "RBC": (LOINC, "789-8"),
        "ANTI_TPO": (LOINC, "8099-4"),
        "ANTI_TG": (LOINC, "8098-6"),
        "HCG_URINE": (LOINC, "2106-3"),
        "HCG_SERUM": (LOINC, "2118-8"),
        "CD4_ABS": (LOINC, "24467-3"),
        "CD4_PCT": (LOINC, "8123-2"),
        "NFL_SERUM": (LOINC, "101281-4"),
        "ANA": (LOINC, "42254-3"),
        "TREG_PCT": (MEASURE_SYSTEM, "treg-pct-cd4"),
        "TREG_ABS": (MEASURE_SYSTEM, "treg-count"),
        "NFL_CSF": (MEASURE_SYSTEM, "nfl-csf"),
        "PNFH_CSF": (MEASURE_SYSTEM, "pnfh-csf"),
        "PNFH_SERUM": (MEASURE_SYSTEM, "pnfh-serum"),
        "SVC_PCT": (MEASURE_SYSTEM, "svc-pct-pred"),
    }
    for local, target in expected.items():
        translations = terminology.concept_maps.translate(LOCAL_LAB, local)
        assert [(t.system, t.code) for t in translations] == [target], local
    assert terminology.concept_maps.translate(LOCAL_LAB, "ANA")[0].equivalence == "inexact"
    assert terminology.concept_maps.translate(LOINC, "82953-1")[0].equivalence == "inexact"


def test_lossy_rows_are_inexact_with_a_comment(terminology: Terminology) -> None:
    for resource in terminology.resources():
        for group in resource.get("group", []):
            for element in group["element"]:
                for target in element["target"]:
                    if target["equivalence"] in ("inexact", "narrower"):
                        assert target.get("comment"), (resource["id"], element["code"])


# ------------------------------------------------------------------------------------------- normalize


def test_normalize_appends_the_canonical_coding_after_the_original(terminology: Terminology) -> None:
    original = observation({"system": LOCAL_LAB, "code": "TREG_PCT", "display": "Treg %"})
    snapshot = json.loads(json.dumps(original))
    normalized = terminology.normalize("Observation", original)
    assert normalized["code"]["coding"] == [{"system": LOCAL_LAB, "code": "TREG_PCT", "display": "Treg %"}, TREG_PCT]
    assert normalized["code"]["text"] == "as the lab wrote it"
    assert original == snapshot  # the input is never mutated (bundles validate it concurrently)


def test_normalize_components_and_already_canonical_codings(terminology: Terminology) -> None:
    panel = observation(
        {"system": HOSPITAL, "code": "MADRS-TOT"},
        component=[
            {"code": {"coding": [{"system": HOSPITAL, "code": "PNFH-LCR"}]}, "valueInteger": 3},
            {"code": {"coding": [{"system": LOINC, "code": "8310-5"}]}, "valueInteger": 1},
        ],
    )
    normalized = terminology.normalize("Observation", panel)
    assert normalized["code"]["coding"][1] == {
        "system": MEASURE_SYSTEM,
        "code": "madrs-total",
        "display": "MADRS total score (0\u201360)",
    }
    assert normalized["component"][0]["code"]["coding"][1] == {
        "system": MEASURE_SYSTEM,
        "code": "pnfh-csf",
        "display": "Phosphorylated neurofilament heavy chain [mass/volume] in CSF",
    }
    assert normalized["component"][1] is panel["component"][1]  # unmatched components are not copied
    already = observation({"system": LOCAL_LAB, "code": "TREG_PCT"}, {"system": MEASURE_SYSTEM, "code": "treg-pct-cd4"})
    assert terminology.normalize("Observation", already) is already


def test_inexact_rows_are_published_but_not_applied_on_write(terminology: Terminology) -> None:
    # SLEDAI-2K is not SELENA-SLEDAI, and unconfirmed CDISC / LOINC aliases are inexact until checked:
    # adding the canonical coding would let a criterion count the wrong score.
    for alias in (
        {"system": HOSPITAL, "code": "SLEDAI-2K"},
        {"system": LOINC, "code": "82953-1"},
        {"system": "https://www.cdisc.org/standards/terminology/controlled-terminology", "code": "MADRS110"},
    ):
        resource = observation(alias)
        assert terminology.normalize("Observation", resource) is resource
        assert terminology.concept_maps.translate(alias["system"], alias["code"])[0].equivalence == "inexact"


def test_normalize_returns_the_same_object_when_nothing_matches(terminology: Terminology) -> None:
    for resource in (
        observation({"system": LOINC, "code": "6690-2"}),
        observation({"system": LOCAL_LAB, "code": "NOT_A_TEST"}),
        {"resourceType": "Observation", "code": "not a CodeableConcept", "component": ["junk", {"code": 3}]},
        {"resourceType": "Observation", "code": {"coding": [{"system": ["x"], "code": {}}, "junk"]}},
    ):
        assert terminology.normalize("Observation", resource) is resource
    condition = {"resourceType": "Condition", "code": {"coding": [{"system": LOCAL_LAB, "code": "TREG_PCT"}]}}
    assert terminology.normalize("Condition", condition) is condition


# ------------------------------------------------------------------------------------------ bad files


def _copy_terminology(tmp_path: Path) -> Path:
    shutil.copytree(MAPPINGS / "terminology", tmp_path / "terminology")
    return tmp_path / "terminology"


def _edit(path: Path, change: Any) -> None:
    resource = json.loads(path.read_text())
    change(resource)
    path.write_text(json.dumps(resource))


def test_a_concept_map_with_an_unknown_key_names_the_file(tmp_path: Path) -> None:
    directory = _copy_terminology(tmp_path)
    bad = directory / "ConceptMap-aliases-to-measure.json"
    _edit(bad, lambda r: r["group"][0]["element"][0].update({"mapsTo": "madrs-item-1"}))
    with pytest.raises(TerminologyError) as caught:
        load_terminology(tmp_path)
    assert str(caught.value) == (
        f"{bad}: ConceptMap.group[0].element[0].mapsTo: unknown element: not defined for this type in FHIR R4 "
        "(got 'madrs-item-1')"
    )


@pytest.mark.parametrize(
    ("file", "change", "message"),
    [
        (
            "ConceptMap-local-lab-to-standard.json",
            lambda r: r["group"][1]["element"][0]["target"][0].update({"code": "treg-percent"}),
            "ConceptMap.group[1].element[0].target[0].code 'treg-percent' is not in its CodeSystem",
        ),
        (
            "ConceptMap-local-lab-to-standard.json",
            lambda r: r["group"][0]["element"][0].update({"code": "LEUCO"}),
            "ConceptMap.group[0].element[0].code 'LEUCO' is not in its CodeSystem",
        ),
        (
            "CodeSystem-trialbridge-measure.json",
            lambda r: r["concept"][0]["property"][0].update({"valueString": "percent"}),
            "code 'treg-pct-cd4' has unit 'percent', which is not UCUM",
        ),
        (
            "ConceptMap-local-lab-to-standard.json",
            lambda r: r["group"][0]["element"][0]["target"][0].pop("equivalence"),
            "ConceptMap.group[0].element[0].target[0].equivalence: required element is missing",
        ),
    ],
)
def test_a_dangling_or_invalid_entry_names_the_file(tmp_path: Path, file: str, change: Any, message: str) -> None:
    directory = _copy_terminology(tmp_path)
    _edit(directory / file, change)
    with pytest.raises(TerminologyError) as caught:
        load_terminology(tmp_path)
    assert str(caught.value) == f"{directory / file}: {message}"


def test_malformed_json_names_the_file(tmp_path: Path) -> None:
    directory = _copy_terminology(tmp_path)
    (directory / "ConceptMap-broken.json").write_text('{"resourceType": "ConceptMap",')
    with pytest.raises(TerminologyError, match=r"^.*/terminology/ConceptMap-broken\.json: The .* is not valid JSON"):
        load_terminology(tmp_path)


# ------------------------------------------------------------------------------- through the store / API


def test_get_the_published_code_system_and_concept_maps(client: TestClient, terminology: Terminology) -> None:
    published = {(r["resourceType"], r["id"]): r for r in terminology.resources()}
    assert set(published) == {
        ("CodeSystem", "trialbridge-measure"),
        ("CodeSystem", "trialbridge-local-lab"),
        ("CodeSystem", "trialbridge-selena-sledai-descriptor"),
        ("CodeSystem", "trialbridge-tag"),
        ("ConceptMap", "local-lab-to-standard"),
        ("ConceptMap", "aliases-to-measure"),
    }
    measure = client.get("/fhir/CodeSystem/trialbridge-measure")
    assert measure.status_code == 200
    assert content(measure.json()) == content(published[("CodeSystem", "trialbridge-measure")])
    assert measure.json()["meta"]["versionId"] == "1"
    by_url = client.get("/fhir/CodeSystem", params={"url": MEASURE_SYSTEM}).json()
    assert [e["resource"]["id"] for e in by_url["entry"]] == ["trialbridge-measure"]
    for concept_map_id in ("local-lab-to-standard", "aliases-to-measure"):
        response = client.get(f"/fhir/ConceptMap/{concept_map_id}")
        assert response.status_code == 200
        assert content(response.json()) == content(published[("ConceptMap", concept_map_id)])


def test_installing_twice_writes_no_new_version(database_url: str, terminology: Terminology) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        store = Store(engine, normalize=terminology.normalize)
        try:
            install_terminology(store, terminology)
            install_terminology(store, terminology)
            for resource in terminology.resources():
                assert store.read(resource["resourceType"], resource["id"]).version_id == 1
            _, total = store.history("ConceptMap", None)
            assert total == 2
        finally:
            store.close()
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "alias",
    [
        {"system": LOCAL_LAB, "code": "TREG_PCT", "display": "Treg %"},
        {"system": HOSPITAL, "code": "TREG-CD4-PCT", "display": "Lymphocytes T régulateurs / CD4 (%)"},
    ],
)
def test_an_observation_posted_under_an_alias_is_found_by_the_measure_code(
    client: TestClient, alias: dict[str, str]
) -> None:
    posted = observation(alias)
    created = client.post("/fhir/Observation", json=posted)
    assert created.status_code == 201
    assert created.json()["code"]["coding"] == [alias, TREG_PCT]
    found = client.get("/fhir/Observation", params={"code": f"{MEASURE_SYSTEM}|treg-pct-cd4"}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [created.json()["id"]]
    stored = found["entry"][0]["resource"]
    assert stored["code"]["coding"][0] == alias
    assert content(stored) == {**posted, "code": {**posted["code"], "coding": [alias, TREG_PCT]}}
    by_alias = client.get("/fhir/Observation", params={"code": f"{alias['system']}|{alias['code']}"}).json()
    assert by_alias["total"] == 1


def test_an_observation_in_a_transaction_bundle_is_normalised(client: TestClient) -> None:
    posted = observation({"system": LOCAL_LAB, "code": "PNFH_CSF"}, value=3700, unit="pg/mL", id="o-pnfh")
    response = client.post(
        "/fhir",
        json={
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"resource": posted, "request": {"method": "PUT", "url": "Observation/o-pnfh"}}],
        },
    )
    assert response.status_code == 200
    stored = client.get("/fhir/Observation/o-pnfh").json()
    assert stored["code"]["coding"] == [
        {"system": LOCAL_LAB, "code": "PNFH_CSF"},
        {
            "system": MEASURE_SYSTEM,
            "code": "pnfh-csf",
            "display": "Phosphorylated neurofilament heavy chain [mass/volume] in CSF",
        },
    ]


def test_an_observation_under_an_unmapped_code_is_stored_as_sent(client: TestClient) -> None:
    posted = observation({"system": "https://hospital.example/lab", "code": "K+"}, value=4.1, unit="mmol/L")
    created = client.post("/fhir/Observation", json=posted)
    assert created.status_code == 201
    read = client.get(f"/fhir/Observation/{created.json()['id']}")
    # Key order aside (PostgreSQL's JSONB keeps its own), the stored text is what was sent: nothing added.
    assert json.dumps(content(read.json()), sort_keys=True) == json.dumps(posted, sort_keys=True)
    stored_text = read.content.decode()
    assert stored_text.count('"coding"') == 1 and MEASURE_SYSTEM not in stored_text


def test_putting_the_same_aliased_observation_twice_keeps_version_1(client: TestClient) -> None:
    body = {**observation({"system": LOCAL_LAB, "code": "TREG_PCT"}), "id": "o-treg"}
    first = client.put("/fhir/Observation/o-treg", json=body)
    assert first.status_code == 201 and first.json()["meta"]["versionId"] == "1"
    second = client.put("/fhir/Observation/o-treg", json=body)
    assert second.status_code == 200
    assert second.json()["meta"]["versionId"] == "1"
    assert second.headers["etag"] == 'W/"1"'
    history = client.get("/fhir/Observation/o-treg/_history").json()
    assert history["total"] == 1
    # A client that sends back what it read (canonical coding included) changes nothing either.
    third = client.put("/fhir/Observation/o-treg", json=content(first.json()) | {"id": "o-treg"})
    assert third.json()["meta"]["versionId"] == "1"
