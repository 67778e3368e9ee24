"""FHIR wire format: version pinning, parsing, validation, errors and bundle processing."""
