"""Benchmarks: latency across backends, fit time, and the paper's accuracy protocol."""
