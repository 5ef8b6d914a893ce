"""Benchmark harness: `python -m benchmarks` measures the gateway against baselines."""
