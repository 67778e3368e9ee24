"""UCUM canonical forms: which quantities compare, and how the hot path stays a look-up and a product."""

from __future__ import annotations

import time

import pytest

from app.fhir import ucum


def same(a: tuple[float, str] | None, b: tuple[float, str] | None) -> bool:
    """Two canonical forms denote the same quantity (equal codes, values within the search tolerance)."""
    assert a is not None and b is not None
    return a[1] == b[1] and a[0] == pytest.approx(b[0], rel=ucum.RELATIVE_TOLERANCE)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ((3900, "pg/mL"), (3.9, "ng/mL")),
        ((4000, "/mm3"), (4.0, "10*3/uL")),
        ((3500, "/mm3"), (3.5, "10*3/uL")),
        ((1, "10*12/L"), (1, "10*6/uL")),
        ((7.5, "10*9/L"), (7.5, "10*3/uL")),
        ((4000, "{cells}/uL"), (4, "10*3/uL")),  # annotations on a dimensioned unit carry no meaning
        ((5, "g/dL"), (50, "g/L")),
        ((5, "g/dL"), (5000, "mg/dL")),
        ((2, "[IU]/mL"), (2000, "m[IU]/mL")),
        ((1, "[iU]"), (1, "[IU]")),
        ((60, "min"), (1, "h")),
        ((1, "kg/m2"), (1, "m-2.kg")),
        ((1, "kPa"), (1000, "N/m2")),
        ((50, "%"), (0.5, "1")),
        ((37, "Cel"), (98.6, "[degF]")),
        ((0, "Cel"), (273.15, "K")),
        ((-40, "Cel"), (-40, "[degF]")),
        ((1, "U/L"), (1e-6 / 60 * 1000, "kat/m3")),
    ],
)
def test_commensurable_quantities_share_a_canonical_form(left: tuple[float, str], right: tuple[float, str]) -> None:
    assert same(ucum.canonical(*left), ucum.canonical(*right))


def test_the_canonical_form_is_si_base_units_written_as_ucum() -> None:
    assert ucum.canonical(3900, "pg/mL") == (pytest.approx(3.9e-6, rel=1e-12), "kg.m-3")
    assert ucum.canonical(4000, "/mm3") == (pytest.approx(4e12, rel=1e-12), "m-3")
    assert ucum.canonical(5, "mmol/L") == (pytest.approx(5.0, rel=1e-12), "m-3.mol")
    assert ucum.canonical(37, "Cel") == (pytest.approx(310.15, rel=1e-12), "K")
    assert ucum.canonical(2, "[IU]/mL") == (pytest.approx(2e6, rel=1e-12), "[IU].m-3")
    assert ucum.canonical(50, "%") == (pytest.approx(0.5), "1")
    # The canonical code is itself UCUM, and canonicalises to itself.
    for code in ("kg.m-3", "m-3", "m-3.mol", "K", "[IU].m-3", "1", "{score}", "kg.m-1.s-2"):
        assert ucum.is_valid(code), code
        assert ucum.canonical(1, code) == (pytest.approx(1.0, rel=1e-12), code)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("mmol/L", "g/dL"),  # substance vs mass concentration
        ("mmol/L", "/L"),  # the mole keeps its dimension: amounts are not counts
        ("[IU]/mL", "/mL"),  # arbitrary units compare only with themselves
        ("[IU]/mL", "[arb'U]/mL"),
        ("[CFU]/mL", "[IU]/mL"),
        ("{score}", "%"),  # annotated pure numbers keep their annotation
        ("{score}", "{ratio}"),
        ("{score}", "1"),
        ("kg", "kg/m2"),
        ("Cel", "s"),
    ],
)
def test_incommensurable_units_differ(left: str, right: str) -> None:
    a, b = ucum.canonical(1, left), ucum.canonical(1, right)
    assert a is not None and b is not None
    assert a[1] != b[1], (left, right, a, b)


def test_pressure_in_mercury_uses_the_librarys_constant() -> None:
    # UCUM defines m[Hg] as 133.3220 kPa; pint (through ucumvert) uses 133.322387 kPa: 3 ppm apart.
    mercury, pascal = ucum.canonical(120, "mm[Hg]"), ucum.canonical(120 * 133.322, "Pa")
    assert mercury is not None and pascal is not None
    assert mercury[1] == pascal[1] == "kg.m-1.s-2"
    assert mercury[0] == pytest.approx(pascal[0], rel=5e-6)


def test_annotations_alone_canonicalise_to_themselves() -> None:
    assert ucum.canonical(7, "{score}") == (7.0, "{score}")
    assert ucum.canonical(3, "10*3{cells}") == (pytest.approx(3000.0), "{cells}")


@pytest.mark.parametrize("code", ["Cel/h", "mCel", "[pH]", "dB", "Np", "B[SPL]", "[p'diop]"])
def test_special_units_other_than_a_bare_temperature_are_refused(code: str) -> None:
    assert ucum.is_valid(code)
    assert ucum.conversion(code) is None
    assert ucum.canonical(1, code) is None


@pytest.mark.parametrize("code", ["", "foo", "mg/", "10*3 /uL", "ng/ml/", "{unclosed", "x" * 300])
def test_invalid_codes_are_neither_valid_nor_convertible(code: str) -> None:
    assert not ucum.is_valid(code)
    assert ucum.canonical(1, code) is None


def test_affine_temperatures_keep_order_and_offset() -> None:
    body = ucum.canonical(98.6, "[degF]")
    fever = ucum.canonical(38, "Cel")
    assert body is not None and fever is not None
    assert body[0] == pytest.approx(310.15, rel=1e-12)
    assert body[0] < fever[0]
    conversion = ucum.conversion("[degF]")
    assert conversion is not None
    assert conversion.scale == pytest.approx(5 / 9) and conversion.offset == pytest.approx(255.372222, rel=1e-6)


def test_a_cached_conversion_costs_a_lookup_and_a_product() -> None:
    ucum.canonical(1, "10*3/uL")
    conversion = ucum.conversion("10*3/uL")
    assert conversion is not None and ucum.conversion("10*3/uL") is conversion  # the same cached object
    assert ucum.conversion("not a unit") is None and "not a unit" in ucum._conversions  # failures are cached too
    rounds = 20_000
    started = time.perf_counter()
    for _ in range(rounds):
        ucum.canonical(4000.0, "/mm3")
    per_call = (time.perf_counter() - started) / rounds
    assert per_call < 20e-6, f"{per_call * 1e6:.2f} us per cached canonical(): the cache is not being hit"


@pytest.mark.parametrize("code", ["m9999", "10*99999", "kg2/m99999", "s-1000", "10^1234.g", "[IU]1000"])
def test_huge_exponents_are_not_converted(code: str) -> None:
    """Reducing them would cost seconds of CPU per code (a client could stall the writer with them)."""
    assert ucum.conversion(code) is None
    assert ucum.canonical(1, code) is None


@pytest.mark.parametrize(
    ("code", "canonical_code"),
    [
        ("10*3/uL", "m-3"),
        ("m3", "m3"),
        ("/100", "1"),
        ("{copies}/mL", "m-3"),
        ("10*12/L", "m-3"),
        ("mg{1000}/dL", "kg.m-3"),
    ],
)
def test_ordinary_exponents_factors_and_annotated_digits_still_convert(code: str, canonical_code: str) -> None:
    found = ucum.conversion(code)
    assert found is not None and found.canonical_code == canonical_code
