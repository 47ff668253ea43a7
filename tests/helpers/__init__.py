"""Real services and small utilities shared by the tests and the benchmarks."""
