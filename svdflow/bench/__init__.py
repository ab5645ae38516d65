"""`svdflow bench`: the hardware profiles timed on the full-size SVD(-XT) architecture with random
weights. Project targets are not here: they live in benchmarks/, which reads this room's JSON."""

from svdflow.bench.cases import GIB, format_table, merge_results, run_bench

__all__ = ["GIB", "format_table", "merge_results", "run_bench"]
