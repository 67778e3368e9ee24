"""Demo data: the transaction bundles under fixtures/demo, loaded at start-up by `serve --demo`.

The bundles use PUT with stable ids, so loading twice changes nothing (an unchanged PUT writes no
new version).
"""

from __future__ import annotations

import logging
from pathlib import Path

from app.fhir import bundle
from app.fhir.validation import parse_json
from app.store.repository import Store

log = logging.getLogger("trialbridge.demo")


def load_demo(store: Store, fixtures_dir: Path, base_url: str = "http://127.0.0.1:8000/fhir") -> int:
    """Load every fixtures/demo/*.json transaction bundle; returns how many entries were processed."""
    processed = 0
    for path in sorted((fixtures_dir / "demo").glob("*.json")):
        response = bundle.process(store, parse_json(path.read_bytes(), str(path)), bundle.BundleOptions(base_url))
        processed += len(response.get("entry", []))
        log.info("demo: loaded %s (%d entries)", path.name, len(response.get("entry", [])))
    return processed
