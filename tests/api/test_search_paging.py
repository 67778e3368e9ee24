"""Paging: next links continue right after the last row shown, even while data changes."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient


def put_patient(client: TestClient, pid: str, family: str, birth: str | None = None) -> None:
    resource: dict[str, Any] = {"resourceType": "Patient", "id": pid, "name": [{"family": family}]}
    if birth:
        resource["birthDate"] = birth
    assert client.put(f"/fhir/Patient/{pid}", json=resource).status_code == 201


def page_ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def next_link(bundle: dict[str, Any]) -> str | None:
    return next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)


def walk(client: TestClient, bundle: dict[str, Any]) -> list[str]:
    seen = page_ids(bundle)
    while (url := next_link(bundle)) is not None:
        response = client.get(url)
        assert response.status_code == 200, response.json()
        bundle = response.json()
        seen += page_ids(bundle)
    return seen


def test_next_pages_neither_repeat_nor_skip_while_data_changes(client: TestClient) -> None:
    for n in range(12):
        put_patient(client, f"p{n:02d}", f"F{n:02d}")
    first = client.get("/fhir/Patient", params={"_sort": "family", "_count": 5}).json()
    assert page_ids(first) == ["p00", "p01", "p02", "p03", "p04"]
    put_patient(client, "early", "F00a")  # sorts inside the page already read
    assert client.delete("/fhir/Patient/p02").status_code == 204
    put_patient(client, "later", "F06a")  # sorts ahead: it is new, and it is shown once
    rest = walk(client, {"link": first["link"]})
    assert rest == ["p05", "p06", "later", "p07", "p08", "p09", "p10", "p11"]


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("-birthdate", ["b", "a", "c", "none"]),  # missing values sort last in both directions
        ("birthdate", ["c", "a", "b", "none"]),
    ],
)
def test_sort_with_missing_values_pages_through_everything(client: TestClient, sort: str, expected: list[str]) -> None:
    put_patient(client, "a", "A", "1990-05-01")
    put_patient(client, "b", "B", "2001-01-01")
    put_patient(client, "c", "C", "1975-12-31")
    put_patient(client, "none", "N")
    first = client.get("/fhir/Patient", params={"_sort": sort, "_count": 1}).json()
    assert walk(client, first) == expected


def test_previous_link_and_bad_token(client: TestClient) -> None:
    for n in range(4):
        put_patient(client, f"p{n}", f"F{n}")
    first = client.get("/fhir/Patient", params={"_count": 2}).json()
    second = client.get(next_link(first) or "").json()
    previous = next(link["url"] for link in second["link"] if link["relation"] == "previous")
    assert page_ids(client.get(previous).json()) == page_ids(first)
    bad = client.get("/fhir/Patient", params={"_count": 2, "_page": "not-a-token"})
    assert bad.status_code == 400 and bad.json()["issue"][0]["expression"] == ["_page"]
