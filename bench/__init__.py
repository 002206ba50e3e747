"""Benchmarks and synthetic data for `curate build`."""
