"""fhirpy (sync and async) against a real `trialbridge serve` process, on SQLite and PostgreSQL.

fhirpy is what many Python teams reach for first; these tests use it the way its README does
(resources, references, search sets, `execute` for the transaction endpoint), not raw HTTP.
fhirpy sends `Content-Type: application/json`, which the server accepts as FHIR JSON.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from fhirpy import AsyncFHIRClient, SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound

from app.testing.live import LiveServer

pytestmark = pytest.mark.live

SITE = "https://hospital.example/mrn"
LOINC = "http://loinc.org"


def patient_body(mrn: str, family: str = "Martin", given: str = "Claire") -> dict[str, Any]:
    return {
        "identifier": [{"system": SITE, "value": mrn}],
        "name": [{"family": family, "given": [given]}],
        "gender": "female",
        "birthDate": "1979-04-12",
    }


def observation_body(value: float) -> dict[str, Any]:
    return {
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "6690-2"}]},
        "effectiveDateTime": "2026-10-10T08:30:00Z",
        "valueQuantity": {"value": value, "unit": "10*3/uL", "system": "http://unitsofmeasure.org", "code": "10*3/uL"},
    }


def transaction_bundle() -> tuple[dict[str, Any], str]:
    """A Patient and two Observations that refer to it by urn:uuid (one placed before the Patient)."""
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    first = {"resourceType": "Observation", **observation_body(4.1), "subject": {"reference": patient_url}}
    second = {"resourceType": "Observation", **observation_body(6.3), "subject": {"reference": patient_url}}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": first,
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "fullUrl": patient_url,
                "resource": {"resourceType": "Patient", **patient_body("TX-1", "Durand")},
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={SITE}|TX-1"},
            },
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": second,
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    return bundle, patient_url


def entry_id(entry: dict[str, Any]) -> str:
    """The id from a transaction-response entry's `location` (Type/id/_history/n)."""
    location: str = entry["response"]["location"]
    return location.split("/")[1]


# ------------------------------------------------------------------------------------------ sync


def test_sync_crud_search_and_history(live_server: LiveServer) -> None:
    client = SyncFHIRClient(live_server.base_url)

    patient = client.resource("Patient", **patient_body("MRN-1"))
    patient.save()
    assert patient.id and patient["meta"]["versionId"] == "1"

    fetched = client.reference("Patient", patient.id).to_resource()
    assert fetched["identifier"][0]["value"] == "MRN-1"
    assert fetched["name"][0]["family"] == "Martin"
    assert fetched["meta"]["versionId"] == "1"

    fetched["gender"] = "other"
    fetched.save()
    assert fetched["meta"]["versionId"] == "2"
    assert client.get("Patient", patient.id)["gender"] == "other"
    saved_again = client.reference("Patient", patient.id).to_resource()
    saved_again.save()  # same content: no new version
    assert saved_again["meta"]["versionId"] == "2"
    history = client.execute(f"Patient/{patient.id}/_history", method="get")
    assert history["type"] == "history" and history["total"] == 2

    other = client.resource("Patient", **patient_body("MRN-2", family="Dubois", given="Jean"))
    other.save()

    by_identifier = client.resources("Patient").search(identifier=f"{SITE}|MRN-1").fetch()
    assert [p.id for p in by_identifier] == [patient.id]
    by_name = client.resources("Patient").search(name="dubois").fetch()
    assert [p.id for p in by_name] == [other.id]
    by_family_prefix = client.resources("Patient").search(family="mar").fetch()
    assert [p.id for p in by_family_prefix] == [patient.id]
    born = client.resources("Patient").search(birthdate__ge="1979-01-01", birthdate__lt="1980").fetch()
    assert {p.id for p in born} == {patient.id, other.id}
    assert client.resources("Patient").search(identifier=f"{SITE}|NOBODY").fetch() == []
    assert client.resources("Patient").search(identifier=f"{SITE}|MRN-2").get().id == other.id
    first = client.resources("Patient").sort("family").first()
    assert first is not None and first.id == other.id  # Dubois before Martin

    # A reference to a saved resource serialises as {"reference": "Patient/id"}; search by reference.
    observation = client.resource("Observation", **observation_body(5.2), subject=patient.to_reference())
    observation.save()
    stored_observation = client.reference("Observation", observation.id).to_resource()
    assert stored_observation["subject"]["reference"] == f"Patient/{patient.id}"
    assert stored_observation["subject"].to_resource().id == patient.id
    found = client.resources("Observation").search(subject=patient, code=f"{LOINC}|6690-2").fetch()
    assert [o.id for o in found] == [observation.id]
    with_subject = client.resources("Observation").search(_id=observation.id).include("Observation", "subject")
    raw = with_subject.fetch_raw()
    assert sorted(e["search"]["mode"] for e in raw["entry"]) == ["include", "match"]

    patient.delete()
    with pytest.raises(ResourceNotFound):  # 410 Gone
        client.reference("Patient", patient.id).to_resource()
    assert client.resources("Patient").search(identifier=f"{SITE}|MRN-1").fetch() == []
    assert [p.id for p in client.resources("Patient").fetch()] == [other.id]


def test_sync_paging_conditional_create_and_update(live_server: LiveServer) -> None:
    client = SyncFHIRClient(live_server.base_url)
    for number in range(7):
        client.resource("Patient", **patient_body(f"PAGE-{number}", family=f"Family{number}")).save()

    # fetch_all() follows the absolute `next` links the server writes (they must start with the base URL).
    everyone = client.resources("Patient").limit(3).sort("family").fetch_all()
    assert [p["name"][0]["family"] for p in everyone] == [f"Family{n}" for n in range(7)]

    # SearchSet.update is the spec's conditional update: PUT Patient?identifier=...
    searchset = client.resources("Patient").search(identifier=f"{SITE}|PAGE-3")
    existing = searchset.get()
    updated, created = searchset.update(client.resource("Patient", **patient_body("PAGE-3", family="Renamed")))
    assert created is False and updated.id == existing.id
    assert updated["meta"]["versionId"] == "2" and updated["name"][0]["family"] == "Renamed"
    fresh, created = (
        client.resources("Patient")
        .search(identifier=f"{SITE}|NEW-1")
        .update(client.resource("Patient", **patient_body("NEW-1")))
    )
    assert created is True and fresh["meta"]["versionId"] == "1"
    assert len(client.resources("Patient").search(identifier=f"{SITE}|NEW-1").fetch()) == 1

    # An invalid resource comes back as an OperationOutcome exception carrying the server's issues.
    bad = client.resource("Observation", **{**observation_body(1.0), "status": "bogus"})
    with pytest.raises(OperationOutcome) as raised:
        bad.save()
    outcome = raised.value.resource
    assert outcome["issue"][0]["expression"] == ["Observation.status"]


def test_sync_transaction_rewrites_urn_uuid_references(live_server: LiveServer) -> None:
    client = SyncFHIRClient(live_server.base_url)
    bundle, _ = transaction_bundle()

    response = client.execute("", method="post", data=bundle)
    assert response["resourceType"] == "Bundle" and response["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in response["entry"]]
    assert statuses == ["201 Created", "201 Created", "201 Created"]
    patient_id = entry_id(response["entry"][1])
    for index in (0, 2):
        observation = client.reference("Observation", entry_id(response["entry"][index])).to_resource()
        assert observation["subject"]["reference"] == f"Patient/{patient_id}"
    assert len(client.resources("Observation").search(subject=f"Patient/{patient_id}").fetch()) == 2

    # The same bundle again: ifNoneExist finds the Patient, the new Observations point at it.
    again = client.execute("", method="post", data=transaction_bundle()[0])
    assert [e["response"]["status"] for e in again["entry"]] == ["201 Created", "200 OK", "201 Created"]
    assert entry_id(again["entry"][1]) == patient_id
    assert len(client.resources("Patient").fetch()) == 1
    assert len(client.resources("Observation").search(subject=f"Patient/{patient_id}").fetch()) == 4


def test_sync_count_needs_lenient_handling(live_server: LiveServer) -> None:
    """fhirpy's count() adds `_totalMethod=count`, an Aidbox parameter that is not FHIR.

    The server is strict about unknown search parameters by default (400, naming the parameter),
    which the spec allows; a client that wants them ignored says `Prefer: handling=lenient`.
    """
    strict = SyncFHIRClient(live_server.base_url)
    for number in range(3):
        strict.resource("Patient", **patient_body(f"COUNT-{number}")).save()
    with pytest.raises(OperationOutcome) as raised:
        strict.resources("Patient").count()
    assert raised.value.resource["issue"][0]["expression"] == ["_totalMethod"]

    lenient = SyncFHIRClient(live_server.base_url, extra_headers={"Prefer": "handling=lenient"})
    assert lenient.resources("Patient").count() == 3
    assert lenient.resources("Patient").search(identifier=f"{SITE}|COUNT-1").count() == 1


def test_sync_get_or_create_does_not_duplicate(live_server: LiveServer) -> None:
    """fhirpy's get_or_create POSTs to `Patient?identifier=...` (conditional create, Aidbox style).

    R4 defines conditional create only through the If-None-Exist header, so the server may refuse
    the query form, but it must not silently drop the condition and create a second Patient.
    """
    client = SyncFHIRClient(live_server.base_url)
    searchset = client.resources("Patient").search(identifier=f"{SITE}|GOC-1")
    try:
        first, created = searchset.get_or_create(client.resource("Patient", **patient_body("GOC-1")))
    except OperationOutcome:  # refusing the non-standard form is fine: then nothing is created
        assert searchset.fetch() == []
        return
    assert created is True
    second, created_again = searchset.get_or_create(client.resource("Patient", **patient_body("GOC-1")))
    assert created_again is False and second.id == first.id
    assert [p.id for p in searchset.fetch()] == [first.id]


# ----------------------------------------------------------------------------------------- async


async def _async_flow(base_url: str) -> None:
    client = AsyncFHIRClient(base_url)

    patient = client.resource("Patient", **patient_body("ASYNC-1"))
    await patient.save()
    assert patient["meta"]["versionId"] == "1"
    fetched = await client.reference("Patient", patient.id).to_resource()
    assert fetched["identifier"][0]["value"] == "ASYNC-1"
    fetched["birthDate"] = "1980-01-01"
    await fetched.save()
    assert fetched["meta"]["versionId"] == "2"
    assert (await client.get("Patient", patient.id))["birthDate"] == "1980-01-01"

    # Ten creates at once, each its own aiohttp session and server request.
    others = [client.resource("Patient", **patient_body(f"ASYNC-P{n}", family="Parallel")) for n in range(10)]
    await asyncio.gather(*(p.save() for p in others))
    assert len({p.id for p in others}) == 10
    parallel = await client.resources("Patient").search(family="parallel").limit(100).fetch()
    assert {p.id for p in parallel} == {p.id for p in others}
    by_identifier = await client.resources("Patient").search(identifier=f"{SITE}|ASYNC-1").fetch()
    assert [p.id for p in by_identifier] == [patient.id]
    assert [p.id for p in await client.resources("Patient").search(name="martin").fetch()] == [patient.id]

    bundle, _ = transaction_bundle()
    response = await client.execute("", method="post", data=bundle)
    assert [e["response"]["status"] for e in response["entry"]] == ["201 Created"] * 3
    patient_id = entry_id(response["entry"][1])
    observations = await client.resources("Observation").search(subject=f"Patient/{patient_id}").fetch()
    assert len(observations) == 2
    assert {o["subject"]["reference"] for o in observations} == {f"Patient/{patient_id}"}

    await patient.delete()
    with pytest.raises(ResourceNotFound):
        await client.reference("Patient", patient.id).to_resource()
    assert await client.resources("Patient").search(identifier=f"{SITE}|ASYNC-1").fetch() == []


def test_async_crud_search_and_transaction(live_server: LiveServer) -> None:
    asyncio.run(_async_flow(live_server.base_url))


def test_sync_chained_reverse_chained_include_and_paging(live_server: LiveServer) -> None:
    """The search features sponsors' scripts lean on, spelled the fhirpy way."""
    client = SyncFHIRClient(live_server.base_url)
    patients = []
    for number in range(3):
        patient = client.resource("Patient", **patient_body(f"CHAIN-{number}", family=f"Chain{number}"))
        patient.save()
        patients.append(patient)
    observations = []
    for number, patient in enumerate(patients):
        for value in (3.0 + number, 7.0 + number):
            observation = client.resource("Observation", **observation_body(value), subject=patient.to_reference())
            observation.save()
            observations.append(observation)

    chained = client.resources("Observation").search(subject__Patient__identifier=f"{SITE}|CHAIN-1").fetch()
    assert sorted(o.id for o in chained) == sorted(o.id for o in observations[2:4])
    low_counts = client.resources("Patient").has("Observation", "subject", value_quantity="lt4").fetch()
    assert [p.id for p in low_counts] == [patients[0].id]

    searchset = client.resources("Observation").search(code=f"{LOINC}|6690-2").include("Observation", "subject")
    raw = searchset.limit(4).fetch_raw()
    modes = [e["search"]["mode"] for e in raw["entry"]]
    assert modes.count("match") == 4 and modes.count("include") >= 2
    everything = client.resources("Observation").search(code=f"{LOINC}|6690-2").limit(4).fetch_all()
    assert sorted(o.id for o in everything) == sorted(o.id for o in observations)
