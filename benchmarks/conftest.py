"""Benchmark fixtures shared by the benchmark modules."""
