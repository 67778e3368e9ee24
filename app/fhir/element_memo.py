"""Model validation that remembers the complex elements it has already validated.

Validating with the fhir.resources models is the largest single cost of a write (~100 µs per Observation,
almost all of it Python-level validators in fhir_core), and most of a resource's complex elements repeat
from one resource to the next: the same `category`, the same LOINC `code`, the same `referenceRange`, the same
`subject` for every result of one patient, the same `meta` for a bundle. The models' validation of an element
depends on the element alone (its JSON and the field's type), so an element whose exact JSON was validated for
the same field of the same model before is valid again, and its validated value can be reused: the model then
validates the resource around it (its own fields, choice types, required elements, the elements not seen
before) and accepts the remembered value as it would accept any validated instance. The idea is Blaze's
interning of identical codings, applied to validation.

The verdict is the model's own: only values the model produced for a valid resource are remembered, keyed by
(model, JSON key, the element's exact JSON), and a resource that fails is validated again from its JSON alone,
so that its errors are reported exactly as without the memo. The memo holds at most `2 * capacity` elements per
process (two generations: an element used again survives a turnover, one-off values such as measured
quantities age out).

The rest of a write's per-element work depends on the element alone as well, so a remembered element carries it
too (`Remembered`): whether it passed the semantic checks where it stands (`clean`: required bindings, reference
targets, invariants; set by the caller once a whole resource passed them), and the search-index rows it gave
(`rows`, filled by the indexer). The caller skips the checks of clean elements and reuses their rows.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

import orjson
from fhir_core.fhirabstractmodel import FHIRAbstractModel

MemoKey = tuple[type, str, bytes]
log = logging.getLogger("trialbridge.validation")


MAX_ELEMENT_BYTES = 1024  # codes, references, meta, ranges: far below; narratives and attachments: not kept


class ElementMemo:
    """Validated element values, with the JSON they came from, by (model, JSON key, element JSON). Two
    generations of `capacity` each: at most 2 * capacity elements of at most MAX_ELEMENT_BYTES of JSON (with
    their models, roughly ten times that in memory)."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._young: dict[MemoKey, Any] = {}
        self._old: dict[MemoKey, Any] = {}

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def get(self, key: MemoKey) -> Any:
        value = self._young.get(key)
        if value is None:
            value = self._old.get(key)
            if value is not None:
                self.put(key, value)
        return value

    def put(self, key: MemoKey, value: Any) -> None:
        if len(self._young) >= self.capacity:
            self._old, self._young = self._young, {}
        self._young[key] = value

    def clear(self) -> None:
        self._young, self._old = {}, {}


MEMO = ElementMemo()


class Remembered:
    """An element seen in a valid resource: its JSON (for the equality check), the model's validated value, whether
    it passed the semantic checks (`clean`), and the index rows extracted from it (None until extracted)."""

    __slots__ = ("clean", "json", "rows", "value")

    def __init__(self, json: Any, value: Any) -> None:
        self.json = json
        self.value = value
        self.clean = False
        self.rows: Any = None


@cache
def _attribute_names(model: type) -> dict[str, str]:
    """JSON key -> attribute name of every field of `model` (`class` -> `class_fhir`, `_birthDate` -> ...)."""
    fields: dict[str, Any] = model.model_fields  # type: ignore[attr-defined]
    return {(info.alias or name): name for name, info in fields.items()}


def _is_validated(value: Any) -> bool:
    if isinstance(value, FHIRAbstractModel):
        return True
    return isinstance(value, list) and bool(value) and all(isinstance(item, FHIRAbstractModel) for item in value)


def validate(model: Any, resource: dict[str, Any], memo: ElementMemo = MEMO) -> Any:
    """`model.model_validate(resource)`, with the resource's complex top-level elements (objects and arrays of
    objects) taken from `memo` where the same JSON was validated for the same field before. Raises the model's
    ValidationError, computed from `resource` alone, when the resource is invalid."""
    return validate_elements(model, resource, memo)[0]


def validate_elements(
    model: Any, resource: dict[str, Any], memo: ElementMemo = MEMO
) -> tuple[Any, dict[str, Remembered]]:
    """As `validate`, and the remembered entry of each of the resource's complex elements, by JSON key (those seen
    before and those remembered now), for the caller's per-element work."""
    names = _attribute_names(model)
    substituted: dict[str, Any] | None = None
    known: dict[str, Remembered] = {}
    missed: list[tuple[str, str, MemoKey, Any]] = []
    for key, value in resource.items():
        kind = value.__class__
        if not (kind is dict or (kind is list and value and value[0].__class__ is dict)):
            continue
        name = names.get(key)
        if name is None:  # not an element of this type: the model reports it
            continue
        try:
            text = orjson.dumps(value)
        except TypeError:  # not JSON (a dict built in code with, say, a Decimal): validated as it is
            continue
        if len(text) > MAX_ELEMENT_BYTES:
            continue
        memo_key = (model, key, text)
        remembered = memo.get(memo_key)
        if remembered is None:
            missed.append((key, name, memo_key, value))
        elif remembered.json == value:  # orjson writes NaN as null, a UUID or a date as a string: equal JSON only
            if substituted is None:
                substituted = dict(resource)
            substituted[key] = remembered.value
            known[key] = remembered
    if substituted is None:
        instance = model.model_validate(resource)
    else:
        try:
            instance = model.model_validate(substituted)
        except Exception:  # report the errors of the JSON as sent, exactly as without the memo
            instance = model.model_validate(resource)
            log.warning("%s: valid as sent, refused with remembered elements (a memo defect)", model.__name__)
    for key, name, memo_key, value in missed:
        validated = getattr(instance, name, None)
        if _is_validated(validated):
            as_json = orjson.loads(memo_key[2])
            if as_json == value:  # a value orjson wrote faithfully (no NaN, UUID, date...): safe to reuse
                entry = known[key] = Remembered(as_json, validated)
                memo.put(memo_key, entry)
    return instance, known
