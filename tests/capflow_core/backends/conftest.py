"""The backend tests use ``serve_pair`` (tests/conftest.py) and ``tests/serve_process.py``."""
