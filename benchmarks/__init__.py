"""Benchmarks (a package so that benchmarks/conftest.py does not shadow tests/conftest.py as ``conftest``)."""
