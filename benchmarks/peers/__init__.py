"""The task queues ``benchmarks/compare.py`` measures Warren against, each defined as a
user of it would define the same two functions (a no-op and a CPU-bound one)."""
