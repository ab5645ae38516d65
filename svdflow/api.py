"""svdflow's Python API: everything the `svdflow` command does, importable.

    from svdflow.api import RunOptions, load_run_spec, plan_run, run_manifest

    spec = load_run_spec("manifests/campaign.yaml")     # ManifestError lists every problem
    for planned in plan_run(spec):
        print(planned.job.id, planned.status, planned.reason)
    result = run_manifest(spec, RunOptions(fail_fast=True))
    print(result.summary())
    run_manifest(spec, engine="ray", address="auto")   # across a Ray cluster (pip install "svdflow[ray]")
    print(read_provenance("renders/spring-campaign/rocket.mp4").params)   # how a file was made
    print(score_folder("renders/spring-campaign").summary())  # quality scores for an older folder (svdflow qc)

A run restores the process-wide settings it changes (torch's float32 matmul precision, the inductor
cache's environment, dynamo's limits) when it ends, so it can run inside another program.
"""

from os import PathLike

from svdflow.errors import SvdflowError, exit_code_for
from svdflow.manifest import load_run_spec
from svdflow.outputs.entry import IndexEntry, Provenance
from svdflow.outputs.index import RunIndex
from svdflow.outputs.provenance import read_provenance
from svdflow.outputs.store import OutputStore
from svdflow.report import write_report
from svdflow.run.executor import RunOptions, RunResult
from svdflow.run.planning import PlannedJob, plan_run
from svdflow.run.rerender import RerenderResult, rerender
from svdflow.run.rescore import QcResult, score_folder
from svdflow.run.runner import run_manifest

__all__ = ["IndexEntry", "PlannedJob", "Provenance", "QcResult", "RerenderResult", "RunIndex", "RunOptions",
           "RunResult", "SvdflowError", "exit_code_for", "load_run_spec", "plan_run", "read_provenance",
           "recorded_entries", "rerender", "run_manifest", "score_folder", "write_report"]


def recorded_entries(output_dir: str | PathLike) -> list[IndexEntry]:
    """Every job an output folder records (index.jsonl, sealed parts, newer sidecars; older formats
    upgraded as they load), in the record's order."""
    return list(RunIndex.load(OutputStore(str(output_dir))))
