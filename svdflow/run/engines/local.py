"""The local engine: this process renders every pending job, on its one device."""

from __future__ import annotations

from svdflow.manifest.resolve import Job, RunSpec
from svdflow.outputs.lock import claim_output_dir
from svdflow.outputs.store import OutputStore
from svdflow.run.executor import Executor, RunOptions, RunResult
from svdflow.run.progress import Reporter


def run_local(spec: RunSpec, jobs: list[Job], store: OutputStore, options: RunOptions,
              reporter: Reporter) -> RunResult:
    """The run's result; OutputStoreError (exit 3) once what finished is recorded, when the output
    store failed."""
    lock = claim_output_dir(store)
    if warning := lock.takeover_warning():
        reporter.note(warning)
    try:
        result = Executor(spec, jobs, store, options, reporter, guard=lock.check).execute()
    finally:
        lock.release()
    if result.stopped is not None:
        raise result.store_failure()
    return result
