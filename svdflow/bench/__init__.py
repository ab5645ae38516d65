"""`svdflow bench`: svdflow's settings timed on the full-size SVD(-XT) architecture with random weights,
against diffusers' own recipe, in one process. Measurements only: the project's targets are not here,
they live in benchmarks/ (benchmarks/gpu_targets.py reads this room's JSON).

config (what to run), state (the pipelines the cases share), clock (timing one case), cases,
kernels and overlap (optional breakdowns), runner (the run and its JSON), table (the summary)."""

from svdflow.bench.config import GIB
from svdflow.bench.runner import merge_results, run_bench
from svdflow.bench.table import format_table

__all__ = ["GIB", "format_table", "merge_results", "run_bench"]
