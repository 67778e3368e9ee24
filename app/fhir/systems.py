"""The code system and identifier-system URLs the service itself writes or reads, named once.

Tests keep their own literals on purpose: they state the expected URL independently of this module.
"""

from __future__ import annotations

SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10_CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
ATC = "http://www.whocc.no/atc"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
MEDDRA = "https://www.meddra.org"
UCUM = "http://unitsofmeasure.org"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
MEASURE = "https://trialbridge.dev/fhir/CodeSystem/measure"
LOCAL_LAB = "https://trialbridge.dev/fhir/CodeSystem/local-lab"
