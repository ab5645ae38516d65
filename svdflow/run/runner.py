"""`svdflow run` as a function: pick the engine, run it, return the result."""

from __future__ import annotations

import os

from svdflow.errors import UsageError
from svdflow.manifest import load_run_spec
from svdflow.manifest.resolve import RunSpec
from svdflow.outputs.store import OutputStore
from svdflow.run.engines.torchrun import World
from svdflow.run.executor import RunOptions, RunResult
from svdflow.run.planning import select_jobs
from svdflow.run.progress import Reporter

ENGINES = ("local", "ray")


def run_manifest(manifest: str | os.PathLike[str] | RunSpec, options: RunOptions | None = None,
                 reporter: Reporter | None = None, world: World | None = None, *, engine: str = "local",
                 address: str | None = None, cpus_per_worker: int | None = None) -> RunResult:
    """Render every job of a manifest that is not up to date; the Python face of `svdflow run`.

    engine "local" (default): this process renders. Under a multi-process launcher (see
    svdflow.run.engines.torchrun) every process calls this; each renders its share and rank 0
    returns the result of the whole run.

    engine "ray": this process drives Ray actors across a cluster (svdflow.run.engines.ray);
    `address` is the cluster's (auto, HOST:PORT; None: RAY_ADDRESS, else a new local Ray instance;
    a program already connected with ray.init uses its connection), `cpus_per_worker` the CPUs of
    each worker on CPUs (default SVDFLOW_CPU_THREADS).
    """
    if engine not in ENGINES:
        raise UsageError(f"--engine {engine}: unknown engine; use one of {', '.join(ENGINES)}")
    world = world or World.from_env()
    if engine != "ray" and (address is not None or cpus_per_worker is not None):
        flag = "--address" if address is not None else "--cpus-per-worker"
        raise UsageError(f"{flag} is for --engine ray; add --engine ray or leave {flag} out")
    if engine == "ray" and world.distributed:
        raise UsageError(f"--engine ray runs from one driver process, but this is rank {world.rank} of "
                         f"{world.size}: run `svdflow run --engine ray` without torchrun/accelerate")
    spec = manifest if isinstance(manifest, RunSpec) else load_run_spec(manifest)
    options = options or RunOptions()
    reporter = reporter or Reporter()
    jobs = select_jobs(spec, options.only)
    store = OutputStore(spec.output_dir)
    if engine == "ray":
        from svdflow.run.engines.ray import RayOptions, run_ray

        return run_ray(spec, jobs, store, options, reporter, RayOptions(address, cpus_per_worker))
    if world.distributed:
        from svdflow.run.engines.torchrun import run_distributed

        return run_distributed(spec, jobs, store, options, reporter, world)
    from svdflow.run.engines.local import run_local

    return run_local(spec, jobs, store, options, reporter)
