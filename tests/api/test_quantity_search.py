"""Quantity search across units (UCUM canonical form), through the ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

UCUM = "http://unitsofmeasure.org"


def quantity(value: float, code: str | None, system: str | None = UCUM, unit: str | None = None) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value, "unit": unit or code}
    if system is not None:
        q["system"] = system
    if code is not None:
        q["code"] = code
    return q


def put_observations(client: TestClient, observations: dict[str, dict[str, Any]]) -> None:
    for obs_id, value_quantity in observations.items():
        body = {
            "resourceType": "Observation",
            "id": obs_id,
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "26464-8"}]},
            "valueQuantity": value_quantity,
        }
        response = client.put(f"/fhir/Observation/{obs_id}", json=body)
        assert response.status_code == 201, response.text


def found(client: TestClient, value: str) -> set[str]:
    response = client.get("/fhir/Observation", params={"value-quantity": value, "_count": 100})
    assert response.status_code == 200, response.text
    bundle = response.json()
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


def test_mass_concentrations_compare_across_prefixes(client: TestClient) -> None:
    put_observations(
        client,
        {
            "pg-3900": quantity(3900, "pg/mL"),
            "pg-3700": quantity(3700, "pg/mL"),
            "ng-3.5": quantity(3.5, "ng/mL"),
            "ng-3.8": quantity(3.8, "ng/mL"),
            "ug-0.004": quantity(0.004, "ug/mL"),
        },
    )
    assert found(client, f"gt3.7|{UCUM}|ng/mL") == {"pg-3900", "ng-3.8", "ug-0.004"}
    assert found(client, f"ge3.7|{UCUM}|ng/mL") == {"pg-3900", "pg-3700", "ng-3.8", "ug-0.004"}
    assert found(client, f"lt3.7|{UCUM}|ng/mL") == {"ng-3.5"}
    assert found(client, f"le3700|{UCUM}|pg/mL") == {"pg-3700", "ng-3.5"}
    assert found(client, f"eq3.9|{UCUM}|ng/mL") == {"pg-3900"}  # [3.85, 3.95) ng/mL
    assert found(client, f"eq4|{UCUM}|ng/mL") == {"pg-3900", "pg-3700", "ng-3.5", "ng-3.8", "ug-0.004"}  # [3.5, 4.5)
    assert found(client, f"eq4.0|{UCUM}|ng/mL") == {"ug-0.004"}
    # substance concentration is another dimension: nothing here is in mol/L
    assert found(client, f"gt0|{UCUM}|mmol/L") == set()


def test_cell_counts_at_the_boundaries(client: TestClient) -> None:
    put_observations(
        client,
        {
            "mm3-4000": quantity(4000, "/mm3"),
            "mm3-3500": quantity(3500, "/mm3"),
            "k-3.99": quantity(3.99, "10*3/uL"),
            "k-4.0": quantity(4.0, "10*3/uL"),
            "k-4.5": quantity(4.5, "10*3/uL"),
            "g-4": quantity(4, "10*9/L"),
            "cells-4000": quantity(4000, "{cells}/uL"),
        },
    )
    four = {"mm3-4000", "k-4.0", "g-4", "cells-4000"}
    assert found(client, f"lt4|{UCUM}|10*3/uL") == {"mm3-3500", "k-3.99"}
    assert found(client, f"le4|{UCUM}|10*3/uL") == {"mm3-3500", "k-3.99", *four}
    assert found(client, f"gt3.99|{UCUM}|10*3/uL") == {*four, "k-4.5"}
    assert found(client, f"ge4.0|{UCUM}|10*3/uL") == {*four, "k-4.5"}
    assert found(client, f"gt4|{UCUM}|10*3/uL") == {"k-4.5"}
    assert found(client, f"sa4|{UCUM}|10*3/uL") == {"k-4.5"}
    assert found(client, f"eb3.99|{UCUM}|10*3/uL") == {"mm3-3500"}
    # implicit precision: 4 is [3.5, 4.5), 4.0 is [3.95, 4.05), 4.00 is [3.995, 4.005)
    assert found(client, f"eq4|{UCUM}|10*3/uL") == {"mm3-3500", "k-3.99", *four}
    assert found(client, f"4.0|{UCUM}|10*3/uL") == {"k-3.99", *four}
    assert found(client, f"eq4.00|{UCUM}|10*3/uL") == four
    assert found(client, f"eq3.99|{UCUM}|10*3/uL") == {"k-3.99"}
    assert found(client, f"eq4000|{UCUM}|/mm3") == four
    assert found(client, f"ne4.00|{UCUM}|10*3/uL") == {"mm3-3500", "k-3.99", "k-4.5"}
    assert found(client, f"ne4|{UCUM}|10*3/uL") == {"k-4.5"}  # 4.5 is outside [3.5, 4.5)
    assert found(client, f"ap4|{UCUM}|10*3/uL") == {"k-3.99", *four}  # [3.6, 4.4]
    # alternatives OR together
    assert found(client, f"lt3.6|{UCUM}|10*3/uL,gt4.4|{UCUM}|10*3/uL") == {"mm3-3500", "k-4.5"}
    # the value alone still compares values as written
    assert found(client, "lt4") == {"k-3.99"}


def test_ten_to_the_twelve_per_litre_is_ten_to_the_six_per_microlitre(client: TestClient) -> None:
    put_observations(
        client,
        {"rbc-a": quantity(4.5, "10*12/L"), "rbc-b": quantity(4.2, "10*6/uL"), "rbc-c": quantity(5.1, "10*12/L")},
    )
    assert found(client, f"gt4.4|{UCUM}|10*6/uL") == {"rbc-a", "rbc-c"}
    assert found(client, f"eq4.5|{UCUM}|10*6/uL") == {"rbc-a"}
    assert found(client, f"lt4.5|{UCUM}|10*12/L") == {"rbc-b"}
    assert found(client, f"eq4200000|{UCUM}|/uL") == {"rbc-b"}


def test_temperatures_convert_with_their_offset(client: TestClient) -> None:
    put_observations(
        client,
        {
            "cel-37": quantity(37, "Cel"),
            "degf-98.6": quantity(98.6, "[degF]"),  # exactly 37 Cel
            "k-311": quantity(311, "K"),  # 37.85 Cel
            "degf-96.8": quantity(96.8, "[degF]"),  # 36 Cel
        },
    )
    assert found(client, f"eq37|{UCUM}|Cel") == {"cel-37", "degf-98.6"}
    assert found(client, f"gt37|{UCUM}|Cel") == {"k-311"}
    assert found(client, f"lt37|{UCUM}|Cel") == {"degf-96.8"}
    assert found(client, f"ge98.6|{UCUM}|[degF]") == {"cel-37", "degf-98.6", "k-311"}
    assert found(client, f"eq98|{UCUM}|[degF]") == set()  # [97.5, 98.5) degF is [36.39, 36.94) Cel
    assert found(client, f"ap37|{UCUM}|Cel") == {"cel-37", "degf-98.6", "k-311", "degf-96.8"}  # [33.3, 40.7]
    # a compound with a temperature scale is not convertible: exact code match, and nothing has that code
    assert found(client, f"gt0|{UCUM}|Cel/h") == set()


def test_arbitrary_units_other_systems_and_quantities_without_system(client: TestClient) -> None:
    put_observations(
        client,
        {
            "iu": quantity(2, "[IU]/mL"),
            "miu": quantity(2500, "m[IU]/mL"),  # 2.5 [IU]/mL
            "per-ml": quantity(3, "/mL"),
            "local": quantity(3, "IU/mL", system="http://example.org/units"),
            "no-system": quantity(3, None, system=None, unit="[IU]/mL"),  # qty-3: a code needs a system
        },
    )
    assert found(client, f"gt1|{UCUM}|[IU]/mL") == {"iu", "miu"}
    assert found(client, f"gt2000|{UCUM}|[IU]/L") == {"miu"}
    assert found(client, f"eq2.5|{UCUM}|[IU]/mL") == {"miu"}
    assert found(client, f"ne2|{UCUM}|[IU]/mL") == {"miu"}  # 2.5 is just outside [1.5, 2.5)
    assert found(client, f"gt1|{UCUM}|/mL") == {"per-ml"}  # counts are not international units
    assert found(client, "gt1|http://example.org/units|IU/mL") == {"local"}
    by_code = found(client, "gt1||[IU]/mL")  # no system: the code as written, whatever the system
    assert "iu" in by_code and "miu" not in by_code and "per-ml" not in by_code
    assert found(client, "gt1") == {"iu", "miu", "per-ml", "local", "no-system"}


def test_ucum_codes_that_cannot_be_converted_fall_back_to_the_code(client: TestClient) -> None:
    put_observations(
        client,
        {
            "ph-7.4": quantity(7.4, "[pH]"),
            "ph-7.1": quantity(7.1, "[pH]"),
            "bad-5": quantity(5, "cells/hpf"),  # not UCUM, though the system says so
            "score-7": quantity(7, "{score}"),
            "score-3": quantity(3, "{score}"),
            "percent-50": quantity(50, "%"),
        },
    )
    assert found(client, f"gt7.2|{UCUM}|[pH]") == {"ph-7.4"}
    assert found(client, f"gt4|{UCUM}|cells/hpf") == {"bad-5"}
    assert found(client, f"lt4|{UCUM}|cells/hpf") == set()
    assert found(client, f"gt4|{UCUM}|{{score}}") == {"score-7"}  # scores compare with scores only
    assert found(client, f"gt0.4|{UCUM}|1") == {"percent-50"}  # 50 % is 0.5


@pytest.mark.parametrize("value", [f"gtabc|{UCUM}|mg", f"eqNaN|{UCUM}|mg", f"Infinity|{UCUM}|mg"])
def test_a_number_that_is_not_one_is_a_bad_request(client: TestClient, value: str) -> None:
    response = client.get("/fhir/Observation", params={"value-quantity": value})
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"] == ["value-quantity"]


def test_an_update_reindexes_the_canonical_form(client: TestClient) -> None:
    put_observations(client, {"changing": quantity(3.9, "ng/mL")})
    assert found(client, f"gt3.7|{UCUM}|ng/mL") == {"changing"}
    update = {
        "resourceType": "Observation",
        "id": "changing",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "26464-8"}]},
        "valueQuantity": quantity(3.9, "mmol/L"),
    }
    assert client.put("/fhir/Observation/changing", json=update).status_code == 200
    assert found(client, f"gt3.7|{UCUM}|ng/mL") == set()
    assert found(client, f"eq3900|{UCUM}|umol/L") == {"changing"}


def test_composite_code_value_quantity_compares_canonical_forms(client: TestClient) -> None:
    for obs_id, loinc, value_quantity in (
        ("wbc-mm3", "6690-2", quantity(4000, "/mm3")),
        ("wbc-k", "6690-2", quantity(3.5, "10*3/uL")),
        ("plt-k", "777-3", quantity(250, "10*3/uL")),
    ):
        body = {
            "resourceType": "Observation",
            "id": obs_id,
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
            "valueQuantity": value_quantity,
        }
        assert client.put(f"/fhir/Observation/{obs_id}", json=body).status_code == 201
    response = client.get(
        "/fhir/Observation", params={"code-value-quantity": f"http://loinc.org|6690-2$ge4|{UCUM}|10*3/uL"}
    )
    assert response.status_code == 200, response.text
    assert {e["resource"]["id"] for e in response.json().get("entry", [])} == {"wbc-mm3"}
