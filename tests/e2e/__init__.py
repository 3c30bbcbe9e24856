"""Browser tests. A package, so that its conftest is imported as e2e.conftest and does not displace
tests/conftest.py, which other test modules import as `conftest`."""
