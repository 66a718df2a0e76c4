"""Example FHIR data that ships with ehrfm: small, synthetic, written by ehrfm itself."""
