"""Check digits and patterns of external code systems, and how spec code sets match codes."""

from __future__ import annotations

import pytest

from app.eligibility.criteria import CodeRef, parse_code
from app.mapping.code_checks import atc_ok, code_ok, icd10_ok, loinc_ok, meddra_ok, snomed_ok


@pytest.mark.parametrize("code", ["6690-2", "777-3", "718-7", "789-8", "8099-4", "24467-3", "101281-4", "93278-0"])
def test_real_loinc_codes_pass_and_a_wrong_check_digit_fails(code: str) -> None:
    assert loinc_ok(code)
    stem, check = code.split("-")
    assert not loinc_ok(f"{stem}-{(int(check) + 1) % 10}")


@pytest.mark.parametrize("code", ["13746004", "191627008", "86044005", "55464009", "77386006", "10828004", "34206005"])
def test_real_snomed_ids_pass_and_a_typo_fails(code: str) -> None:
    assert snomed_ok(code)
    assert not snomed_ok(code[:-1] + str((int(code[-1]) + 1) % 10))
    assert not snomed_ok(code[:2] + code[3] + code[2] + code[4:]) or code[2] == code[3]  # a transposition


def test_patterns_of_icd10_atc_and_meddra() -> None:
    assert all(icd10_ok(c) for c in ("F31", "F31.3", "G12.21", "C00-C97"))
    assert not any(icd10_ok(c) for c in ("C", "F31.", "f31", "C00-C9"))
    assert all(atc_ok(c) for c in ("N", "N06", "N06A", "N06AB", "N06AB06", "L04AX03"))
    assert not any(atc_ok(c) for c in ("N6", "N06AB6", "n06"))
    assert meddra_ok("10028813") and not meddra_ok("1002881") and not meddra_ok("20028813")
    assert code_ok("http://example.org/local", "x") is None


def test_code_sets_match_exact_codes_prefixes_and_icd10_blocks() -> None:
    exact = CodeRef.model_validate(parse_code("snomed|13746004"))
    assert exact.matches("http://snomed.info/sct", "13746004")
    assert not exact.matches("http://snomed.info/sct", "137460041")
    assert not exact.matches("http://hl7.org/fhir/sid/icd-10", "13746004")
    prefix = CodeRef.model_validate(parse_code("atc|N06A*"))
    assert prefix.matches("http://www.whocc.no/atc", "N06AB06") and not prefix.matches(
        "http://www.whocc.no/atc", "N05AN01"
    )
    block = CodeRef.model_validate(parse_code("icd10|C00-C97"))
    assert block.block == ("C00", "C97")
    assert block.matches("http://hl7.org/fhir/sid/icd-10", "C50.9")
    assert block.matches("http://hl7.org/fhir/sid/icd-10", "C97")
    assert not block.matches("http://hl7.org/fhir/sid/icd-10", "D06.9")
    # A LOINC code has a hyphen too, but is never a block.
    assert CodeRef.model_validate(parse_code("loinc|6690-2")).block is None
