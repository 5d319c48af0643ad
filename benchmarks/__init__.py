"""Speed measurements (not tests): ``python -m benchmarks`` from the repository root."""
