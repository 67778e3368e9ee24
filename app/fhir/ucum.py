"""UCUM quantities in a canonical form, so that quantities in different units compare numerically.

`canonical(3900, "pg/mL")` and `canonical(3.9, "ng/mL")` both give `(3.9e-06, "kg.m-3")`: the value in SI
base units and a stable unit string naming them. Quantity search compares these instead of the units
the client happened to use, as FHIR asks when the system is http://unitsofmeasure.org.

Parsing and unit algebra come from `ucumvert` (a UCUM grammar for lark, and UCUM's units defined for
pint). Building the registry takes about a second (once per process, on first use or `warm_up()`), and
converting a code a few milliseconds, so each code's conversion (a scale, an offset and the canonical
code) is computed once and kept in a dict; after that a quantity costs a dict look-up and a
multiplication. Canonical values are not rounded (that would cost more than the rest): 3.9 ng/mL and
3900 pg/mL may differ in the last bit, so searches compare them with `RELATIVE_TOLERANCE`.

The canonical form, and where it departs from a naive reduction:

- Base units are pint's SI ones (kg, m, s, K, mol, A, cd, rad, bit), written like a UCUM expression with
  the atoms sorted: `kg.m-3`, `m-3` (cells per volume), `mol.m-3`, `1` (dimensionless). Unlike UCUM's own
  canonical units, the mole keeps its dimension: mmol/L and /L (amount vs count) never compare.
- Arbitrary units (UCUM's isArbitrary: [IU], [arb'U], [CFU], ...) are not commensurable with anything but
  themselves, so each is its own base unit: `[IU]/mL` and `m[IU]/L` compare (both `[IU].m-3`), `[IU]/mL`
  and `/mL` do not. ([iU] is the same unit as [IU].)
- Annotations (`{cells}`) carry no meaning in UCUM, so `{cells}/uL` is `/uL`. A dimensionless unit has
  nothing left to say what it counts, though, so there the annotations stay: `{score}` canonicalises to
  `{score}` (scores compare with scores), not to `1` (where they would meet percentages and ratios).
- Special units (UCUM's isSpecial): the three temperature scales alone (`Cel`, `[degF]`, `[degRe]`) are
  converted to kelvin with their offset (an affine map, increasing, so ranges and order survive). Any
  other use of a special unit (`Cel/h`, `mCel`, `[pH]`, `dB`, `Np`, ...) is refused: None.

A code that is not UCUM, or not convertible, gives None; callers then fall back to comparing codes as
written. `is_valid` only checks the UCUM syntax and atoms (`[pH]` is valid but not convertible).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from app.fhir.systems import UCUM as UCUM_SYSTEM

# Canonical values closer than this (relatively) are one quantity reached by two routes of floating point.
RELATIVE_TOLERANCE = 1e-12

_TEMPERATURES = frozenset({"Cel", "[degF]", "[degRe]"})
# pint's SI base units -> the UCUM symbol written in canonical codes.
_SYMBOLS = {
    "kilogram": "kg",
    "meter": "m",
    "second": "s",
    "kelvin": "K",
    "mole": "mol",
    "ampere": "A",
    "candela": "cd",
    "radian": "rad",
    "bit": "bit",
}


@dataclass(frozen=True, slots=True)
class Conversion:
    """value in the code's unit -> `value * scale + offset` in `canonical_code` (offset only for temperatures)."""

    scale: float
    offset: float
    canonical_code: str

    def apply(self, value: float) -> float:
        return value * self.scale + self.offset


class _Ucum:
    """The parser, the pint registry with UCUM's units, and the transformer between them (built once, ~1 s)."""

    def __init__(self) -> None:
        import pint
        import ucumvert  # type: ignore[import-untyped]  # ucumvert has no py.typed and no stubs
        from lark import Token
        from ucumvert import UcumToPintTransformer, get_ucum_parser
        from ucumvert.xml_util import get_units_with_full_definition  # type: ignore[import-untyped]  # as above

        # UCUM's own table (ucum-essence.xml, shipped with ucumvert) says which units are arbitrary or special.
        definitions = get_units_with_full_definition()
        self.special = frozenset(u.code_cs for u in definitions if u.is_special)
        # arbitrary atom -> the arbitrary unit it is ([iU] is defined as 1 [IU]; the others as themselves)
        arbitrary = {u.code_cs: u.code_cs for u in definitions if u.is_arbitrary}
        arbitrary["[iU]"] = "[IU]"

        registry: pint.UnitRegistry[float] = pint.UnitRegistry()
        registry.load_definitions(Path(ucumvert.__file__).resolve().parent / "pint_ucum_defs.txt")
        # One base unit (with its own dimension) per arbitrary unit: ucumvert defines them all as 1, which
        # would make [IU]/mL equal to /mL.
        markers: dict[str, str] = {}
        for index, name in enumerate(sorted(set(arbitrary.values()))):
            unit = f"ucum_arbitrary_{index}"
            registry.define(f"{unit} = [{unit}]")
            markers[name] = unit
        self.unit_symbols = {**_SYMBOLS, **{unit: name for name, unit in markers.items()}}
        self.registry = registry
        self.quantity_type = registry.Quantity
        self.kelvin = registry.kelvin
        self.parser = get_ucum_parser()
        self.token_type = Token

        class Transformer(UcumToPintTransformer):  # type: ignore[misc]
            def simple_unit(self, args: list[Any]) -> Any:
                atom = str(args[-1])
                if atom in arbitrary:
                    marker = registry.Quantity(1, markers[arbitrary[atom]])
                    if len(args) == 2:  # a prefix: its factor, taken from a metric unit with the same prefix
                        return super().simple_unit([args[0], "g"]).to("gram").magnitude * marker
                    return marker
                return super().simple_unit(args)

        self.transformer = Transformer(ureg=registry)

    def parse(self, code: str) -> Any:
        from ucumvert import parse_ucum

        return parse_ucum(code, self.parser)

    def conversion(self, code: str) -> Conversion | None:
        tree = self.parse(code)
        tokens = [t for t in tree.scan_values(lambda v: isinstance(v, self.token_type))]
        atoms = {str(t) for t in tokens if t.type in ("UNIT_METRIC", "UNIT_NON_METRIC")}
        annotations = sorted({str(t) for t in tokens if t.type == "ANNOTATION"})
        if atoms & self.special:
            return self._temperature(code) if code in _TEMPERATURES else None
        quantity = self.transformer.transform(tree)
        if isinstance(quantity, self.token_type):  # only an annotation: "{score}"
            quantity = self.quantity_type(1)
        elif isinstance(quantity, int | float):  # annotations only, combined: "{a}/{b}"
            quantity = self.quantity_type(quantity)
        base = quantity.to_base_units()
        parts = []
        for unit, exponent in sorted(base.unit_items(), key=lambda item: self.unit_symbols.get(item[0], item[0])):
            symbol = self.unit_symbols.get(unit)
            if symbol is None:  # a base unit we do not know how to write: refuse rather than guess
                return None
            power = int(exponent) if float(exponent).is_integer() else None
            if power is None:
                return None
            parts.append(symbol if power == 1 else f"{symbol}{power}")
        # Annotations only count where nothing else is left to say what is counted: "{score}".
        canonical_code = ".".join(parts) if parts else "".join(annotations) or "1"
        scale = float(base.magnitude)
        if not scale > 0:
            return None
        return Conversion(scale, 0.0, canonical_code)

    def _temperature(self, code: str) -> Conversion:
        unit = self.transformer.transform(self.parse(code)).units
        zero = float(self.quantity_type(0.0, unit).to(self.kelvin).magnitude)
        one = float(self.quantity_type(1.0, unit).to(self.kelvin).magnitude)
        return Conversion(one - zero, zero, "K")


_state: _Ucum | None = None
_lock = threading.Lock()
# code -> its conversion (None: not convertible). A plain dict, read without the lock: the ingest hot path.
_conversions: dict[str, Conversion | None] = {}
_MAX_CACHED = 10_000  # distinct codes remembered; a flood of made-up codes empties it rather than grow it
# An exponent of four digits or more (`m9999`, `10*99999`): no real unit has one, and reducing it costs
# seconds of CPU per code (huge integer powers), a cheap way for a client to stall the writer.
_HUGE_EXPONENT = re.compile(r"(?:[*^]|(?<=[A-Za-z\]\)]))[+-]?\d{4,}")
_ANNOTATION = re.compile(r"\{[^}]*\}")


def _ucum() -> _Ucum:
    global _state
    if _state is None:
        with _lock:
            if _state is None:
                _state = _Ucum()
    return _state


def _convert(code: str) -> Conversion | None:
    if not code or len(code) > 255 or _HUGE_EXPONENT.search(_ANNOTATION.sub("", code)):
        return None
    ucum = _ucum()
    with _lock:  # the lark parser and pint's caches are not meant for concurrent use
        try:
            found = ucum.conversion(code)
        except Exception:  # any failure to parse or reduce means "not convertible", never a failed write
            found = None
        if len(_conversions) >= _MAX_CACHED:
            _conversions.clear()
        _conversions[code] = found
    return found


def conversion(code: str) -> Conversion | None:
    """How to bring a value in UCUM unit `code` to the canonical form; None if `code` is not convertible."""
    try:
        return _conversions[code]
    except KeyError:
        return _convert(code)


def canonical(value: float, code: str) -> tuple[float, str] | None:
    """`value` `code` in the canonical form, e.g. (3900, 'pg/mL') -> (3.9e-06, 'kg.m-3'); None if not UCUM.

    The value is a plain double product: two routes to one quantity may differ in the last bits
    (3.9 ng/mL vs 3900 pg/mL), so compare canonical values with a relative tolerance (`RELATIVE_TOLERANCE`).
    """
    found = _conversions.get(code) or conversion(code)
    if found is None:
        return None
    return value * found.scale + found.offset, found.canonical_code


@lru_cache(maxsize=4096)
def is_valid(code: str) -> bool:
    """Whether `code` is a syntactically valid UCUM unit made of known atoms (convertible or not)."""
    if not code or len(code) > 255:
        return False
    ucum = _ucum()
    with _lock:
        try:
            ucum.parse(code)
        except Exception:
            return False
    return True


def warm_up() -> None:
    """Build the parser and registry now (about a second) rather than on the first quantity indexed."""
    conversion("10*3/uL")


__all__ = ["RELATIVE_TOLERANCE", "UCUM_SYSTEM", "Conversion", "canonical", "conversion", "is_valid", "warm_up"]
