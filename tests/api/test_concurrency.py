"""Many clients writing at the same moment, against a real server process, on SQLite and PostgreSQL.

Every client has its own thread and its own HTTP connection; a barrier releases them together so the
requests really overlap inside the server. What is checked is what a trial site cares about: no
request fails, no Patient is created twice, nothing is lost, every reference points at the one
Patient with that identifier, and versions count exactly the changes that were made.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from app.testing.live import LiveServer

pytestmark = pytest.mark.live

SITE = "https://hospital.example/mrn"
OBS_SYSTEM = "https://hospital.example/lab-result"
FHIR_JSON = "application/fhir+json"
HEADERS = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}

CLIENTS = 20
PATIENTS_PER_BUNDLE = 25
OBSERVATIONS_PER_PATIENT = 2
MRN_POOL = 60  # 20 clients x 25 patients drawn from 60 identifiers: each identifier in ~8 bundles
MAX_RETRIES = 5


@dataclass
class Outcome:
    status: int | None = None
    body: Any = None
    retries: int = 0
    error: BaseException | None = None
    responses: list[tuple[int, Any]] = field(default_factory=list)


def run_together(count: int, work: Callable[[int, httpx.Client], Outcome], base_url: str) -> list[Outcome]:
    """Run `work(i, client)` in `count` threads released at once by a barrier; each gets its own client."""
    barrier = threading.Barrier(count)
    outcomes = [Outcome() for _ in range(count)]

    def run(index: int) -> None:
        try:
            with httpx.Client(base_url=base_url, headers=HEADERS, timeout=180) as http:
                http.get("metadata").raise_for_status()  # connect before the barrier
                barrier.wait(timeout=60)
                outcomes[index] = work(index, http)
        except BaseException as exc:  # reported by the caller with the thread's index
            outcomes[index].error = exc

    threads = [threading.Thread(target=run, args=(i,), name=f"client-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a client thread did not finish within 300 s"
    errors = {i: repr(o.error) for i, o in enumerate(outcomes) if o.error is not None}
    assert not errors, f"client threads raised: {errors}"
    return outcomes


def post_with_retry(http: httpx.Client, url: str, body: dict[str, Any], **kwargs: Any) -> Outcome:
    """POST; a 409 (the server's "someone wrote the same resource at the same moment, retry") is retried.

    A 409 is the documented answer to a genuine write conflict, so a well-behaved client retries the
    whole bundle; retries are counted and reported by the tests, and ideally there are none because
    the server serialises conditional creates itself.
    """
    outcome = Outcome()
    for attempt in range(MAX_RETRIES + 1):
        response = http.post(url, json=body, **kwargs)
        outcome.status, outcome.body = response.status_code, _json(response)
        if response.status_code != 409 or attempt == MAX_RETRIES:
            return outcome
        outcome.retries += 1
        time.sleep(0.05 * (attempt + 1))
    return outcome


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def search_all(http: httpx.Client, resource_type: str, **params: str) -> list[dict[str, Any]]:
    """Every match of a search, following `next` links."""
    found: list[dict[str, Any]] = []
    response = http.get(resource_type, params={"_count": "1000", **params})
    while True:
        assert response.status_code == 200, response.text
        page = response.json()
        found.extend(e["resource"] for e in page.get("entry", []) if e["search"]["mode"] == "match")
        next_url = next((link["url"] for link in page.get("link", []) if link["relation"] == "next"), None)
        if next_url is None:
            return found
        response = http.get(next_url)


def mrn(number: int) -> str:
    return f"RACE-{number:03d}"


# ------------------------------------------------------------------------ racing conditional creates


def racing_bundle(client_index: int) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    """25 Patients (ifNoneExist on identifiers shared with other clients) and 2 Observations each.

    Each client lists its patients in its own shuffled order, as independent senders would, so two
    bundles often need the same identifiers in opposite orders. Returns the bundle, the MRNs of its
    Patient entries (in entry order) and, for each Observation identifier, the MRN it is about.
    """
    rng = random.Random(client_index)
    numbers = [(client_index * 3 + k) % MRN_POOL for k in range(PATIENTS_PER_BUNDLE)]
    rng.shuffle(numbers)
    patients, observations = [], []
    obs_subject: dict[str, str] = {}
    for number in numbers:
        patient_url = f"urn:uuid:{uuid.uuid4()}"
        patients.append(
            {
                "fullUrl": patient_url,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": SITE, "value": mrn(number)}],
                    "name": [{"family": f"Race{number}"}],
                    "gender": "unknown",
                },
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={SITE}|{mrn(number)}"},
            }
        )
        for j in range(OBSERVATIONS_PER_PATIENT):
            obs_id = f"c{client_index}-{mrn(number)}-{j}"
            obs_subject[obs_id] = mrn(number)
            observations.append(
                {
                    "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                    "resource": {
                        "resourceType": "Observation",
                        "status": "final",
                        "identifier": [{"system": OBS_SYSTEM, "value": obs_id}],
                        "code": {"coding": [{"system": "http://loinc.org", "code": "6690-2"}]},
                        "subject": {"reference": patient_url},
                        "valueQuantity": {
                            "value": 4 + j,
                            "unit": "10*3/uL",
                            "system": "http://unitsofmeasure.org",
                            "code": "10*3/uL",
                        },
                    },
                    "request": {"method": "POST", "url": "Observation"},
                }
            )
    # Half the clients put the Observations first: references forward to later entries must work too.
    entries = observations + patients if client_index % 2 else patients + observations
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    return bundle, [mrn(n) for n in numbers], obs_subject


def test_concurrent_transactions_with_overlapping_conditional_creates(
    live_server: LiveServer, record_property: Callable[[str, object], None]
) -> None:
    bundles = [racing_bundle(i) for i in range(CLIENTS)]

    def work(index: int, http: httpx.Client) -> Outcome:
        return post_with_retry(http, live_server.base_url, bundles[index][0])  # POST [base], no slash

    outcomes = run_together(CLIENTS, work, live_server.base_url)
    retries = sum(o.retries for o in outcomes)
    record_property("transaction_retries_after_409", retries)

    failed = {i: (o.status, o.body) for i, o in enumerate(outcomes) if o.status != 200}
    assert not failed, f"bundles not accepted (after {retries} retries on 409): {failed}"

    # What each response says: every Patient entry is 201 (created here) or 200 (found), and all the
    # entries for one identifier, across all bundles, name the same Patient.
    ids_by_mrn: dict[str, set[str]] = defaultdict(set)
    created = Counter[str]()
    for (bundle, mrns, _), outcome in zip(bundles, outcomes, strict=True):
        body = outcome.body
        assert body["type"] == "transaction-response"
        entries = body["entry"]
        assert len(entries) == len(bundle["entry"])
        for request_entry, response_entry in zip(bundle["entry"], entries, strict=True):
            status = response_entry["response"]["status"]
            kind, res_id = response_entry["response"]["location"].split("/")[:2]
            assert kind == request_entry["resource"]["resourceType"]
            if kind == "Observation":
                assert status == "201 Created"
                continue
            assert status in ("201 Created", "200 OK"), status
            value = request_entry["resource"]["identifier"][0]["value"]
            ids_by_mrn[value].add(res_id)
            if status == "201 Created":
                created[value] += 1
        assert set(mrns) <= set(ids_by_mrn)
    duplicates = {m: ids for m, ids in ids_by_mrn.items() if len(ids) != 1}
    assert not duplicates, f"one identifier, several Patients in the responses: {duplicates}"
    assert set(created.values()) == {1} and set(created) == set(ids_by_mrn), (
        f"each identifier must be created by exactly one bundle: {created}"
    )

    with httpx.Client(base_url=live_server.base_url, headers=HEADERS, timeout=60) as http:
        patient_by_mrn: dict[str, str] = {}
        for value, ids in sorted(ids_by_mrn.items()):
            matches = search_all(http, "Patient", identifier=f"{SITE}|{value}")
            assert [p["id"] for p in matches] == sorted(ids), f"{value}: {len(matches)} Patients"
            patient_by_mrn[value] = matches[0]["id"]
        all_patients = search_all(http, "Patient")
        assert len(all_patients) == len(ids_by_mrn)

        expected_subjects = {k: v for _, _, subjects in bundles for k, v in subjects.items()}
        assert len(expected_subjects) == CLIENTS * PATIENTS_PER_BUNDLE * OBSERVATIONS_PER_PATIENT
        observations = search_all(http, "Observation")
        assert len(observations) == len(expected_subjects), "Observations lost or duplicated"
        subjects = {o["identifier"][0]["value"]: o["subject"]["reference"] for o in observations}
        assert set(subjects) == set(expected_subjects)
        wrong = {
            obs: ref for obs, ref in subjects.items() if ref != f"Patient/{patient_by_mrn[expected_subjects[obs]]}"
        }
        assert not wrong, f"Observations whose subject is not the Patient with their MRN: {wrong}"

        # The reference index agrees with the content: searching by subject finds each one's share.
        some_mrn = mrn(0)
        by_subject = search_all(http, "Observation", subject=f"Patient/{patient_by_mrn[some_mrn]}")
        assert len(by_subject) == sum(1 for v in expected_subjects.values() if v == some_mrn)


# ------------------------------------------------------------------------- racing conditional updates

UPDATED_MRNS = ["UPD-1", "UPD-2", "NEW-1", "NEW-2"]  # the first two exist beforehand, NEW-* do not
DISTINCT_CONTENTS = 15  # clients 15..19 send the same content as clients 0..4


def updated_patient(value: str, client_index: int) -> dict[str, Any]:
    variant = client_index % DISTINCT_CONTENTS
    return {
        "resourceType": "Patient",
        "identifier": [{"system": SITE, "value": value}],
        "name": [{"family": f"Family{variant}", "given": ["Claire"]}],
        "gender": "female",
        "telecom": [{"system": "phone", "value": f"+33 1 00 00 00 {variant:02d}"}],
    }


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in ("id", "meta")}


def test_concurrent_conditional_updates_of_the_same_identifiers(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.base_url, headers=HEADERS, timeout=60) as http:
        initial = {}
        for value in UPDATED_MRNS[:2]:
            response = http.post(
                "Patient",
                json={"resourceType": "Patient", "gender": "unknown", "identifier": [{"system": SITE, "value": value}]},
            )
            assert response.status_code == 201, response.text
            initial[value] = response.json()

    def work(index: int, http: httpx.Client) -> Outcome:
        outcome = Outcome()
        order = list(UPDATED_MRNS)
        random.Random(index).shuffle(order)
        for value in order:
            body = updated_patient(value, index)
            response = http.put(
                "Patient",
                params={"identifier": f"{SITE}|{value}"},
                json=body,
                headers={"Prefer": "return=representation"},
            )
            outcome.responses.append((response.status_code, (value, body, _json(response))))
        return outcome

    outcomes = run_together(CLIENTS, work, live_server.base_url)
    by_mrn: dict[str, list[tuple[int, dict[str, Any], dict[str, Any]]]] = defaultdict(list)
    for index, outcome in enumerate(outcomes):
        for status, (value, sent, body) in outcome.responses:
            assert status in (200, 201), f"client {index}, {value}: {status} {body}"
            by_mrn[value].append((status, sent, body))

    with httpx.Client(base_url=live_server.base_url, headers=HEADERS, timeout=60) as http:
        for value in UPDATED_MRNS:
            answers = by_mrn[value]
            assert len(answers) == CLIENTS
            matches = search_all(http, "Patient", identifier=f"{SITE}|{value}")
            assert len(matches) == 1, f"{value}: {len(matches)} Patients after concurrent conditional updates"
            current = matches[0]
            pid = current["id"]
            assert {body["id"] for _, _, body in answers} == {pid}

            existed = value in initial
            creations = sum(1 for status, _, _ in answers if status == 201)
            assert creations == (0 if existed else 1), f"{value}: {creations} responses said 201 Created"

            # Each response shows the version holding exactly what that client sent: either a new version
            # it wrote, or the current one when its content equalled it (no new version for no change).
            returned_versions = Counter[int]()
            content_of_version: dict[int, dict[str, Any]] = {}
            for _, sent, body in answers:
                version = int(body["meta"]["versionId"])
                assert _content(body) == _content(sent)
                returned_versions[version] += 1
                assert content_of_version.setdefault(version, _content(body)) == _content(body)

            # Versions are 1..N with no gap: every version but the pre-existing first was written by one
            # of these updates (no phantom or lost version), and N counts the updates that changed content.
            final_version = int(current["meta"]["versionId"])
            first_written = 2 if existed else 1
            assert set(returned_versions) == set(range(first_written, final_version + 1)), (
                f"{value}: versions returned {sorted(returned_versions)}, current version {final_version}"
            )
            assert _content(current) == content_of_version[final_version]
            # At least one new version per distinct content sent; duplicates add one only when another
            # content came in between. 20 clients, 15 distinct contents:
            assert DISTINCT_CONTENTS <= final_version - first_written + 1 <= CLIENTS

            history = http.get(f"Patient/{pid}/_history", params={"_count": "100"}).json()
            versions = sorted(int(e["resource"]["meta"]["versionId"]) for e in history["entry"])
            assert versions == list(range(1, final_version + 1))
            contents = {int(e["resource"]["meta"]["versionId"]): _content(e["resource"]) for e in history["entry"]}
            for version in range(first_written, final_version + 1):
                assert contents[version] == content_of_version[version]
                if version > 1:
                    assert contents[version] != contents[version - 1], f"{value}: version {version} changed nothing"


# ------------------------------------------------------ the same condition, spelled in different ways

SPELLED_MRNS = [f"SPELL-{n}" for n in range(8)]


def spelled_request(kind: int, base_url: str, value: str) -> tuple[str, str, dict[str, Any]]:
    """One conditional create of `value`, in one of four equivalent spellings a real client might send."""
    body = {"resourceType": "Patient", "identifier": [{"system": SITE, "value": value}], "gender": "unknown"}
    plain = f"identifier={SITE}|{value}"
    encoded = "identifier=" + quote(f"{SITE}|{value}", safe="")  # what a URL-encoding client sends
    if kind == 0:
        return "POST", f"{base_url}/Patient", {"json": body, "headers": {"If-None-Exist": plain}}
    if kind == 1:
        return "POST", f"{base_url}/Patient", {"json": body, "headers": {"If-None-Exist": encoded}}
    if kind == 2:  # conditional update: creates when nothing matches; httpx writes `|` as %7C
        return "PUT", f"{base_url}/Patient", {"json": body, "params": {"identifier": f"{SITE}|{value}"}}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": body,
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": encoded},
            }
        ],
    }
    return "POST", base_url, {"json": bundle}


def test_concurrent_conditional_creates_with_differently_spelled_conditions(live_server: LiveServer) -> None:
    """`identifier=sys|v` and `identifier=sys%7Cv` are one condition: racing clients must not both create.

    One round per identifier: all 20 clients (five per spelling) ask for the same identifier at once.
    """
    next_round = threading.Barrier(CLIENTS)

    def work(index: int, http: httpx.Client) -> Outcome:
        outcome = Outcome()
        for value in SPELLED_MRNS:
            method, url, kwargs = spelled_request(index % 4, live_server.base_url, value)
            next_round.wait(timeout=60)
            response = http.request(method, url, **kwargs)
            body = _json(response)
            if method == "POST" and url == live_server.base_url and response.status_code == 200:
                status = int(body["entry"][0]["response"]["status"].split()[0])
                res_id = body["entry"][0]["response"]["location"].split("/")[1]
            else:
                status, res_id = response.status_code, (body.get("id") if isinstance(body, dict) else None)
            outcome.responses.append((status, (value, res_id, body)))
        return outcome

    outcomes = run_together(CLIENTS, work, live_server.base_url)
    with httpx.Client(base_url=live_server.base_url, headers=HEADERS, timeout=60) as http:
        found = {
            value: [p["id"] for p in search_all(http, "Patient", identifier=f"{SITE}|{value}")]
            for value in SPELLED_MRNS
        }
    duplicates = {value: ids for value, ids in found.items() if len(ids) != 1}
    assert not duplicates, f"Patients per identifier after racing equivalent conditions: {duplicates}"

    ids_by_mrn: dict[str, set[str]] = defaultdict(set)
    created = Counter[str]()
    for index, outcome in enumerate(outcomes):
        for status, (value, res_id, body) in outcome.responses:
            assert status in (200, 201), f"client {index} (spelling {index % 4}), {value}: {status} {body}"
            ids_by_mrn[value].add(res_id)
            created[value] += status == 201
    assert dict(created) == dict.fromkeys(SPELLED_MRNS, 1), f"201 Created per identifier: {dict(created)}"
    assert {value: sorted(ids) for value, ids in ids_by_mrn.items()} == found
