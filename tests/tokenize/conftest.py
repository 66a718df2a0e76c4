"""Fixtures of the tokenizer tests: the real Synthea MEDS set, ``synthea_meds``, now lives in
tests/conftest.py so that the tasks' tests share the same session-scoped ingest."""
