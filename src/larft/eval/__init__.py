"""Length-following evaluation: benchmarks with their own upstream counters and metrics,
the counting (cognition) probe and a retention check."""
