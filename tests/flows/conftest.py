# prefect_harness (one Prefect API per session) lives in tests/conftest.py: tests/faults uses it too

