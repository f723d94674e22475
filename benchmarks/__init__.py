"""Benchmark scripts (run as ``python benchmarks/NAME.py``); see benchmarks/README.md."""
