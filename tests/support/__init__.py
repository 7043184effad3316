"""Helpers shared by test modules: imported, never collected (no `test_*.py` here).

Fixtures live in the conftest.py files; what a test module needs to import (process wrappers,
shared job specs, predicates) lives here, so that no test module imports another."""
