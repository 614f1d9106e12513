"""Benchmarks (see bench/README.md); figures go to bench/RESULTS.md, never into tests."""
