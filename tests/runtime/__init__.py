"""Tests of the runtime/ distribution (Python package and C library)."""
