"""`svdflow run` as a function: pick the engine, run it, return the result."""

from __future__ import annotations

import os

from svdflow.manifest import load_run_spec
from svdflow.manifest.resolve import RunSpec
from svdflow.outputs.store import OutputStore
from svdflow.run.engines.torchrun import World
from svdflow.run.executor import RunOptions, RunResult
from svdflow.run.planning import select_jobs
from svdflow.run.progress import Reporter


def run_manifest(manifest: str | os.PathLike[str] | RunSpec, options: RunOptions | None = None,
                 reporter: Reporter | None = None, world: World | None = None) -> RunResult:
    """Render every job of a manifest that is not up to date; the Python face of `svdflow run`.

    Under a multi-process launcher (see svdflow.run.engines.torchrun) every process calls this;
    each renders its share and rank 0 returns the result of the whole run.
    """
    spec = manifest if isinstance(manifest, RunSpec) else load_run_spec(manifest)
    options = options or RunOptions()
    reporter = reporter or Reporter()
    world = world or World.from_env()
    jobs = select_jobs(spec, options.only)
    store = OutputStore(spec.output_dir)
    if world.distributed:
        from svdflow.run.engines.torchrun import run_distributed

        return run_distributed(spec, jobs, store, options, reporter, world)
    from svdflow.run.engines.local import run_local

    return run_local(spec, jobs, store, options, reporter)
