"""Server-assigned ids: UUID version 7, valid FHIR ids, unique, and ordered by creation time (so the indexes
keyed by id grow at their right edge)."""

from __future__ import annotations

import time
import uuid

from app.fhir.validation import check_id
from app.store.repository import new_id


def test_ids_are_uuid7_and_valid_fhir_ids() -> None:
    value = new_id()
    check_id(value, "id")  # raises when not 1-64 of [A-Za-z0-9-.]
    parsed = uuid.UUID(value)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert str(parsed) == value
    milliseconds = parsed.int >> 80
    assert abs(milliseconds - time.time_ns() // 1_000_000) < 5_000


def test_ids_are_unique_and_time_ordered() -> None:
    first = [new_id() for _ in range(50_000)]
    assert len(set(first)) == len(first)
    time.sleep(0.002)
    later = new_id()
    assert later > max(first)
    # within one millisecond the order is random (74 random bits), across milliseconds it is creation order
    assert sorted(first, key=lambda v: uuid.UUID(v).int >> 80) == sorted(first, key=lambda v: v[:13])
