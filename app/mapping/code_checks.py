"""Syntax checks for codes of the large external code systems we cannot ship (LOINC, SNOMED CT, ICD-10,
ICD-10-CM, ATC, MedDRA, NCIt): their check digits and patterns catch most typos in mapping specs and fixtures."""

from __future__ import annotations

import re
from collections.abc import Callable

from app.fhir.systems import ATC, LOINC, MEDDRA, SNOMED

ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10_CM = "http://hl7.org/fhir/sid/icd-10-cm"
NCIT = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"

_LOINC = re.compile(r"(\d{1,7})-(\d)")
_ICD10 = re.compile(r"[A-Z]\d\d(\.\d{1,2})?|[A-Z]\d\d-[A-Z]\d\d")  # a code, or a block such as C00-C97
_ICD10_CM = re.compile(r"[A-Z]\d[0-9A-Z](\.[0-9A-Z]{1,4})?")
_ATC = re.compile(r"[A-Z](\d\d([A-Z]([A-Z](\d\d)?)?)?)?")
_MEDDRA = re.compile(r"1\d{7}")
_NCIT = re.compile(r"C\d{1,7}")

# Verhoeff's dihedral-group tables (SNOMED CT identifiers end in a Verhoeff check digit).
_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
_P = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]


def loinc_ok(code: str) -> bool:
    """LOINC codes end in a mod-10 (Luhn) check digit: 6690-2."""
    match = _LOINC.fullmatch(code)
    if not match:
        return False
    total = 0
    for position, char in enumerate(reversed(match[1] + match[2])):
        digit = int(char)
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def snomed_ok(code: str) -> bool:
    """SNOMED CT identifiers: 6-18 digits, no leading zero, a Verhoeff check digit, a concept partition."""
    if not code.isdigit() or not 6 <= len(code) <= 18 or code[0] == "0":
        return False
    check = 0
    for position, char in enumerate(reversed(code)):
        check = _D[check][_P[position % 8][int(char)]]
    # The partition identifier (second and third digits from the right) is "00" or "10" for concepts.
    return check == 0 and code[-3:-1] in ("00", "10")


def icd10_ok(code: str) -> bool:
    return bool(_ICD10.fullmatch(code))


def icd10_cm_ok(code: str) -> bool:
    return bool(_ICD10_CM.fullmatch(code))


def atc_ok(code: str) -> bool:
    return bool(_ATC.fullmatch(code))


def meddra_ok(code: str) -> bool:
    return bool(_MEDDRA.fullmatch(code))


def ncit_ok(code: str) -> bool:
    return bool(_NCIT.fullmatch(code))


CHECKS: dict[str, Callable[[str], bool]] = {
    LOINC: loinc_ok,
    SNOMED: snomed_ok,
    ICD10: icd10_ok,
    ICD10_CM: icd10_cm_ok,
    ATC: atc_ok,
    MEDDRA: meddra_ok,
    NCIT: ncit_ok,
}


def code_ok(system: str, code: str) -> bool | None:
    """True/False for the systems checked here, None for a system this module knows nothing about."""
    check = CHECKS.get(system)
    return None if check is None else check(code)
