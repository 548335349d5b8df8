"""Tools: the benchmark harness (images/s, FLOPs, per-op timings)."""
