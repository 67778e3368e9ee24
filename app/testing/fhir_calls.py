"""Small FHIR calls the API tests share: create with a known id, and the ids a search matched."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient


def put(client: TestClient, resource: dict[str, Any]) -> None:
    """Create `resource` under its own id (PUT as create); the server must answer 201."""
    response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code == 201, response.json()


def match_ids(client: TestClient, path: str, params: dict[str, str] | list[tuple[str, str]]) -> set[str]:
    """The ids of the `match` entries of a search (not includes, not outcomes); the search must succeed."""
    response = client.get(f"/fhir/{path}", params=params)
    assert response.status_code == 200, response.json()
    return {e["resource"]["id"] for e in response.json().get("entry", []) if e["search"]["mode"] == "match"}
