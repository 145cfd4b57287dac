"""Fixtures of the task tests live in tests/conftest.py (shared with the flow tests)."""
