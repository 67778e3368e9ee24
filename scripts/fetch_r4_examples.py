"""Regenerates fixtures/r4-examples/ from the official FHIR R4 examples (npm package hl7.fhir.r4.examples 4.0.1).

Writes, for the resource types TrialBridge must accept (TYPES below):

* ``examples.ndjson.gz``: one example per line, sorted by file name; each line is the example file with the
  whitespace between JSON tokens removed, nothing added or reordered (numbers keep their original spelling).
  Gzip with mtime 0 and no file name, so the same package always gives the same bytes.
* ``index.tsv``: ``line<TAB>file<TAB>resourceType<TAB>id`` (line numbers from 1), after a header row.
* ``README.md``: source, licence (CC0), how to regenerate, counts per type.

Usage::

    python scripts/fetch_r4_examples.py                      # npm pack hl7.fhir.r4.examples@4.0.1 into a temp dir
    python scripts/fetch_r4_examples.py /path/to/package     # an unpacked package folder (or its .tgz)
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "hl7.fhir.r4.examples"
VERSION = "4.0.1"
OUT = Path(__file__).resolve().parent.parent / "fixtures" / "r4-examples"

TYPES = [
    "Patient", "Practitioner", "PractitionerRole", "Organization", "Encounter", "Condition", "Observation",
    "Procedure", "MedicationStatement", "MedicationRequest", "MedicationAdministration", "Medication",
    "AdverseEvent", "ResearchStudy", "ResearchSubject", "Group", "PlanDefinition", "Questionnaire",
    "QuestionnaireResponse", "Consent", "Provenance", "AuditEvent", "CodeSystem", "ValueSet", "ConceptMap",
    "Specimen", "DiagnosticReport", "AllergyIntolerance", "Immunization",
]  # fmt: skip

_JSON_WHITESPACE = frozenset(" \t\n\r")


def minify(text: str) -> str:
    """The JSON text without the whitespace between tokens; strings and numbers are kept verbatim."""
    out: list[str] = []
    in_string = escaped = False
    start = 0  # start of the current run of kept characters
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in _JSON_WHITESPACE:
            out.append(text[start:index])
            start = index + 1
    out.append(text[start:])
    return "".join(out)


def package_files(source: Path) -> Iterator[tuple[str, bytes]]:
    """(file name, bytes) of every file of the package, from an unpacked folder or an npm .tgz."""
    if source.is_dir():
        folder = source / "package" if (source / "package" / "package.json").is_file() else source
        for path in sorted(folder.iterdir()):
            if path.is_file():
                yield path.name, path.read_bytes()
        return
    with tarfile.open(source, "r:gz") as tar:
        for member in tar.getmembers():
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 2 and parts[0] == "package":
                handle = tar.extractfile(member)
                assert handle is not None
                yield parts[1], handle.read()


def npm_pack(destination: Path) -> Path:
    """Fetches the package tarball with `npm pack` (the npm registry's ordinary client)."""
    subprocess.run(
        ["npm", "pack", "--silent", f"{PACKAGE}@{VERSION}", "--pack-destination", str(destination)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    tarballs = list(destination.glob("*.tgz"))
    if len(tarballs) != 1:
        raise SystemExit(f"npm pack left {len(tarballs)} tarballs in {destination}")
    return tarballs[0]


def collect(source: Path) -> list[tuple[str, str, str, str]]:
    """(file name, minified JSON, resourceType, id) of the examples of TYPES, sorted by file name."""
    wanted = set(TYPES)
    rows = []
    manifest = None
    for name, data in package_files(source):
        if name == "package.json":
            manifest = json.loads(data)
            continue
        if not name.endswith(".json") or name.startswith("."):
            continue
        text = data.decode("utf-8-sig")
        resource = json.loads(text)
        if not isinstance(resource, dict) or resource.get("resourceType") not in wanted:
            continue
        line = minify(text)
        if json.loads(line) != resource:
            raise SystemExit(f"{name}: minifying changed the content")
        rows.append((name, line, resource["resourceType"], str(resource.get("id", ""))))
    if manifest is None or (manifest.get("name"), manifest.get("version")) != (PACKAGE, VERSION):
        raise SystemExit(f"{source} is not {PACKAGE} {VERSION} (package.json: {manifest and manifest.get('name')})")
    rows.sort(key=lambda row: row[0])
    return rows


def write(rows: list[tuple[str, str, str, str]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as archive:
        for _, line, _, _ in rows:
            archive.write(line.encode("utf-8") + b"\n")
    (out / "examples.ndjson.gz").write_bytes(raw.getvalue())

    index = ["line\tfile\tresourceType\tid"]
    index += [f"{number}\t{name}\t{rtype}\t{rid}" for number, (name, _, rtype, rid) in enumerate(rows, 1)]
    (out / "index.tsv").write_text("\n".join(index) + "\n", encoding="utf-8")

    counts = Counter(rtype for _, _, rtype, _ in rows)
    table = "\n".join(f"| {rtype} | {counts[rtype]} |" for rtype in sorted(TYPES))
    size = sum(len(line.encode("utf-8")) for _, line, _, _ in rows)
    readme = f"""# Official FHIR R4 examples

`examples.ndjson.gz` holds the {len(rows)} official FHIR R4 examples of the resource types TrialBridge is
expected to accept, one resource per line ({size:,} bytes uncompressed, {len(raw.getvalue()):,} compressed).
`index.tsv` gives, for each line (numbered from 1), the example's file name in the package, its
`resourceType` and `id`.

- Source: the npm package [`{PACKAGE}@{VERSION}`](https://www.npmjs.com/package/{PACKAGE}/v/{VERSION})
  published by HL7 ("Example resources in the R4 version of the FHIR standard", <http://hl7.org/fhir/R4>).
- Licence: CC0-1.0 (public domain dedication), as declared by the package and by the FHIR specification's
  licence for its examples.
- Content: every `package/*.json` file whose `resourceType` is one of the types below, sorted by file name.
  Each line is the file's JSON with the whitespace between tokens removed: nothing is added, dropped or
  reordered, numbers keep their original spelling. Examples of other types, and Bundles containing
  resources of these types, are not included.
- Used by `tests/fhir/test_official_examples.py`, which lists the few examples the server rejects and why.

Regenerate (the output is deterministic: gzip with mtime 0, sorted input):

```sh
python scripts/fetch_r4_examples.py                  # runs `npm pack {PACKAGE}@{VERSION}` in a temp dir
python scripts/fetch_r4_examples.py path/to/package  # or an unpacked package folder, or the .tgz
```

| resourceType | examples |
|---|---:|
{table}
| **total** | **{len(rows)}** |
"""
    (out / "README.md").write_text(readme, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, help="unpacked package folder or .tgz (default: npm pack)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default: {OUT})")
    args = parser.parse_args(argv)
    if args.source is not None:
        rows = collect(args.source)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rows = collect(npm_pack(Path(tmp)))
    missing = set(TYPES) - {rtype for _, _, rtype, _ in rows}
    if missing:
        raise SystemExit(f"no examples of {sorted(missing)}")
    write(rows, args.out)
    print(f"wrote {len(rows)} examples to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
