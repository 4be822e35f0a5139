"""GPU checks (a package, so its conftest does not clash with tests/conftest.py as module 'conftest')."""
