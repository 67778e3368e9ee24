"""TrialBridge: a FHIR R4 interoperability service for immune-therapy clinical trials."""

__version__ = "0.1.0"
