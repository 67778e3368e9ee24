"""The SMART `fhirclient` library against a real `trialbridge serve` process, on SQLite and PostgreSQL.

fhirclient parses every response into its strict R4 models, so these tests also check that what
the server sends (CapabilityStatement, resources, searchsets, transaction responses) is valid R4
as another implementation reads it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from fhirclient import client
from fhirclient.models.bundle import Bundle, BundleEntry, BundleEntryRequest
from fhirclient.models.capabilitystatement import CapabilityStatement
from fhirclient.models.fhirreference import FHIRReference
from fhirclient.models.humanname import HumanName
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient
from fhirclient.server import FHIRServer

from app.testing.live import LiveServer

pytestmark = pytest.mark.live

SITE = "https://hospital.example/mrn"
LOINC = "http://loinc.org"


def patient_json(mrn: str, family: str = "Martin", birth_date: str = "1979-04-12") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": SITE, "value": mrn}],
        "name": [{"family": family, "given": ["Claire"]}],
        "gender": "female",
        "birthDate": birth_date,
    }


def observation_json(subject: str, value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "6690-2"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": "2026-10-10T08:30:00Z",
        "valueQuantity": {"value": value, "unit": "10*3/uL", "system": "http://unitsofmeasure.org", "code": "10*3/uL"},
    }


@pytest.fixture
def smart(live_server: LiveServer) -> Iterator[client.FHIRClient]:
    fhir = client.FHIRClient(settings={"app_id": "trialbridge-tests", "api_base": live_server.base_url})
    yield fhir
    fhir.server.session.close()


@pytest.fixture
def server(smart: client.FHIRClient) -> FHIRServer:
    fhir_server: FHIRServer = smart.server
    return fhir_server


def test_capability_statement_parses_and_the_client_is_ready(smart: client.FHIRClient) -> None:
    # prepare() reads /metadata into fhirclient's strict CapabilityStatement model and picks the auth
    # from rest.security: no SMART OAuth extension, so an open server, ready at once.
    assert smart.prepare() is True
    statement = smart.server.capabilityStatement
    assert isinstance(statement, CapabilityStatement)
    assert statement.fhirVersion == "4.0.1"
    assert "Patient" in {r.type for r in statement.rest[0].resource}


def test_create_read_update_vread_delete(server: FHIRServer) -> None:
    created = Patient(patient_json("MRN-1")).create(server)
    assert created is not None
    pid = created["id"]
    assert created["meta"]["versionId"] == "1"

    patient = Patient.read(pid, server)
    assert patient.id == pid
    assert patient.identifier[0].value == "MRN-1"
    assert patient.birthDate.isostring == "1979-04-12"
    assert patient.meta.versionId == "1"

    patient.gender = "other"
    patient.name.append(HumanName({"family": "Martin-Durand", "use": "maiden"}))
    updated = patient.update(server)
    assert updated is not None and updated["meta"]["versionId"] == "2"
    again = Patient.read(pid, server)
    assert again.gender == "other" and [n.family for n in again.name] == ["Martin", "Martin-Durand"]
    assert again.meta.versionId == "2"
    assert Patient.read_from(f"Patient/{pid}/_history/1", server).gender == "female"

    unchanged = again.update(server)  # same content: the server keeps version 2
    assert unchanged is not None and unchanged["meta"]["versionId"] == "2"

    # An Observation built from the models, pointing at the Patient.
    observation = Observation(observation_json(f"Patient/{pid}", 5.2))
    observation.subject = FHIRReference({"reference": f"Patient/{pid}"})
    obs = observation.create(server)
    assert obs is not None and obs["subject"]["reference"] == f"Patient/{pid}"

    assert patient.delete(server) is None  # 204 No Content
    with pytest.raises(requests.HTTPError) as gone:
        Patient.read(pid, server)
    assert gone.value.response.status_code == 410
    assert gone.value.response.json()["issue"][0]["code"] == "deleted"


def test_search(server: FHIRServer) -> None:
    first = Patient(patient_json("MRN-1", "Martin", "1979-04-12")).create(server)["id"]  # type: ignore[index]
    second = Patient(patient_json("MRN-2", "Dubois", "1965-02-01")).create(server)["id"]  # type: ignore[index]
    for number in range(5):
        Patient(patient_json(f"MANY-{number}", "Nombreux", "2001-01-01")).create(server)
    Observation(observation_json(f"Patient/{first}", 3.9)).create(server)

    by_identifier = Patient.where(struct={"identifier": f"{SITE}|MRN-2"}).perform_resources(server)
    assert [p.id for p in by_identifier] == [second]
    assert isinstance(by_identifier[0], Patient)

    by_name = list(Patient.where(struct={"name": "martin"}).perform_resources_iter(server))
    assert [p.id for p in by_name] == [first]
    born_after = Patient.where(struct={"family": "martin", "birthdate": "ge1970-01-01"})
    assert [p.id for p in born_after.perform_resources_iter(server)] == [first]
    born_before = Patient.where(struct={"birthdate": "lt1970-01-01"})
    assert [p.id for p in born_before.perform_resources_iter(server)] == [second]
    either = Patient.where(struct={"identifier": {"$or": [f"{SITE}|MRN-1", f"{SITE}|MRN-2"]}})
    assert {p.id for p in either.perform_resources_iter(server)} == {first, second}

    # fhirclient's `$gte` operator writes `birthdate=>=1970-01-01`, which is not FHIR search syntax
    # (FHIR uses a `ge` prefix). The server must refuse it rather than search for something else.
    with pytest.raises(requests.HTTPError) as refused:
        list(Patient.where(struct={"birthdate": {"$gte": "1970-01-01"}}).perform_resources_iter(server))
    assert refused.value.response.status_code == 400
    assert refused.value.response.json()["issue"][0]["expression"] == ["birthdate"]

    # Paging: perform_iter follows the absolute `next` links of each searchset page.
    # The server counts every match only when asked (_total=accurate); otherwise only on the last page.
    counted = {"family": "nombreux", "_count": "2", "_sort": "_id", "_total": "accurate"}
    pages = list(Patient.where(struct=counted).perform_iter(server))
    assert [len(page.entry) for page in pages] == [2, 2, 1]
    assert all(page.total == 5 for page in pages)
    lazy = list(Patient.where(struct={"family": "nombreux", "_count": "2"}).perform_iter(server))
    assert [page.total for page in lazy] == [None, None, 5]
    assert len({e.resource.id for page in pages for e in page.entry}) == 5

    # _include through the library's own API: the Observation's subject comes along.
    with_subject = Observation.where(struct={"subject": f"Patient/{first}"}).include("subject")
    (bundle,) = list(with_subject.perform_iter(server))
    modes = {e.search.mode: type(e.resource).__name__ for e in bundle.entry}
    assert modes == {"match": "Observation", "include": "Patient"}


def _transaction(mrn: str) -> Bundle:
    """Patient (ifNoneExist) and an Observation that refers to it by urn:uuid, built from the models."""
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    return Bundle(
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                BundleEntry(
                    {
                        "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                        "resource": observation_json(patient_url, 6.1),
                        "request": {"method": "POST", "url": "Observation"},
                    }
                ).as_json(),
                BundleEntry(
                    {
                        "fullUrl": patient_url,
                        "resource": patient_json(mrn, "Transaction"),
                        "request": BundleEntryRequest(
                            {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={SITE}|{mrn}"}
                        ).as_json(),
                    }
                ).as_json(),
            ],
        }
    )


def test_transaction_bundle(server: FHIRServer) -> None:
    # Bundle.create() knows a transaction goes to the base (createPath() is None for transaction/batch).
    raw = _transaction("TX-1").create(server)
    assert raw is not None
    response = Bundle(raw)  # the transaction-response parses as a strict R4 Bundle
    assert response.type == "transaction-response"
    assert [e.response.status for e in response.entry] == ["201 Created", "201 Created"]
    obs_id = response.entry[0].response.location.split("/")[1]
    patient_id = response.entry[1].response.location.split("/")[1]
    assert response.entry[1].fullUrl.endswith(f"/Patient/{patient_id}")
    observation = Observation.read(obs_id, server)
    assert observation.subject.reference == f"Patient/{patient_id}"

    # The same through post_json, the library's low-level call: ifNoneExist finds the Patient.
    posted = server.post_json("", _transaction("TX-1").as_json())
    assert posted.status_code == 200
    assert posted.headers["content-type"].startswith("application/fhir+json")
    second = Bundle(posted.json())
    assert [e.response.status for e in second.entry] == ["201 Created", "200 OK"]
    assert second.entry[1].response.location.split("/")[1] == patient_id
    new_obs = Observation.read(second.entry[0].response.location.split("/")[1], server)
    assert new_obs.subject.reference == f"Patient/{patient_id}"
    assert len(Patient.where(struct={"identifier": f"{SITE}|TX-1"}).perform_resources(server)) == 1

    # A transaction with an invalid entry is refused whole with an OperationOutcome (HTTPError here).
    bad = _transaction("TX-2").as_json()
    bad["entry"][0]["resource"]["status"] = "bogus"
    with pytest.raises(requests.HTTPError) as refused:
        server.post_json("", bad)
    assert refused.value.response.status_code == 422
    assert refused.value.response.json()["issue"][0]["expression"] == ["Bundle.entry[0].resource.status"]
    assert Patient.where(struct={"identifier": f"{SITE}|TX-2"}).perform_resources(server) == []
