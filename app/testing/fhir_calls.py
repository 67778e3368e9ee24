"""Small FHIR calls the API tests share: create with a known id, and the ids a search matched."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi.testclient import TestClient

if TYPE_CHECKING:
    # TestClient.get's own `params` type (httpx2 exports no public alias): a dict, or (name, value) pairs
    # for a repeated name. Mirrored rather than narrowed to list[tuple[str, str]], which `list`'s
    # invariance would make incompatible with httpx2's list[tuple[str, str | int | float | bool | None]].
    from httpx2._types import QueryParamTypes


def put(client: TestClient, resource: dict[str, Any]) -> None:
    """Create `resource` under its own id (PUT as create); the server must answer 201."""
    response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code == 201, response.json()


def match_ids(client: TestClient, path: str, params: QueryParamTypes) -> set[str]:
    """The ids of the `match` entries of a search (not includes, not outcomes); the search must succeed."""
    response = client.get(f"/fhir/{path}", params=params)
    assert response.status_code == 200, response.json()
    return {e["resource"]["id"] for e in response.json().get("entry", []) if e["search"]["mode"] == "match"}
