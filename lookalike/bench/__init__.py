"""Benchmarks: each times the project against a reference measured in the same run."""
