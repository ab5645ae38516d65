"""The torchrun engine. Many processes, one manifest: the launcher (accelerate, torchrun, mpirun)
makes the processes, svdflow only reads who it is from the environment and splits the work.

Rank 0 decides which jobs are pending and how to share them, and broadcasts that decision (and the
run's id), so every rank acts on the same plan even while others have already started writing. Each
rank renders its share on its own device, loads the record of its own jobs only and appends their
lines to parts of its own; rank 0 compacts them into index.jsonl once every rank is done.
"""

from __future__ import annotations

import datetime
import heapq
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from svdflow.errors import OutputStoreError, SvdflowError
from svdflow.manifest.resolve import Job, RunSpec
from svdflow.outputs.index import INDEX_FILE, RunIndex, new_run_id
from svdflow.outputs.lock import claim_output_dir
from svdflow.outputs.store import OutputStore
from svdflow.run.executor import Executor, RunOptions, RunResult
from svdflow.run.input_hashes import InputHashes
from svdflow.run.planning import plan_run
from svdflow.run.progress import Reporter
from svdflow.settings import load_settings

# Launchers name ranks differently: torchrun/accelerate (RANK...), Open MPI, MPICH/Intel MPI, MVAPICH.
_RANK_VARS = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK")
_SIZE_VARS = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
_LOCAL_RANK_VARS = ("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "MV2_COMM_WORLD_LOCAL_RANK")
_LOCAL_SIZE_VARS = ("LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_LOCAL_SIZE")


def _first_int(env: Mapping[str, str], names: Sequence[str], default: int) -> int:
    for name in names:
        if env.get(name, "").strip().isdigit():
            return int(env[name])
    return default


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> World:
        env = os.environ if env is None else env
        size = _first_int(env, _SIZE_VARS, 1)
        return cls(rank=_first_int(env, _RANK_VARS, 0), size=size,
                   local_rank=_first_int(env, _LOCAL_RANK_VARS, 0),
                   local_size=_first_int(env, _LOCAL_SIZE_VARS, size))


def lonely_launch_hint(env: Mapping[str, str] | None = None) -> str | None:
    """`accelerate launch --cpu --num_processes N` without --mpirun_hostfile starts ONE process with
    MASTER_ADDR set and no rank: say so instead of silently rendering everything in one process."""
    env = os.environ if env is None else env
    if env.get("ACCELERATE_USE_CPU") == "True" and "MASTER_ADDR" in env and World.from_env(env).size == 1:
        return ("accelerate started a single process: on CPUs, `accelerate launch --cpu --num_processes N` needs "
                "--mpirun_hostfile to start N processes; use `accelerate launch --multi_gpu --num_processes N` "
                "(it runs on CPUs too) or `torchrun --nproc-per-node N -m svdflow run ...`")
    return None


def assign(costs: Sequence[tuple[str, float]], size: int) -> list[list[str]]:
    """Share jobs between `size` ranks by estimated cost (longest first onto the least loaded rank).

    Deterministic: ties break on job id and rank number, so every rank computes the same split.
    Each rank's list keeps the manifest order of its jobs.
    """
    order = {job_id: i for i, (job_id, _) in enumerate(costs)}
    loads = [(0.0, rank) for rank in range(size)]
    shares: list[list[str]] = [[] for _ in range(size)]
    for job_id, cost in sorted(costs, key=lambda c: (-c[1], c[0])):
        load, rank = heapq.heappop(loads)
        shares[rank].append(job_id)
        heapq.heappush(loads, (load + cost, rank))
    return [sorted(share, key=order.__getitem__) for share in shares]


class Group:
    """The collective operations svdflow needs, over torch.distributed's gloo backend (CPU
    tensors only, so it works the same whether ranks render on GPUs or CPUs). For a World of
    several processes only: one process has nothing to talk to."""

    def __init__(self, world: World):
        import torch.distributed as dist

        self.world = world
        self._owned = False
        if not dist.is_initialized():
            timeout = load_settings().dist_timeout_s
            dist.init_process_group("gloo", rank=world.rank, world_size=world.size,
                                    timeout=datetime.timedelta(seconds=timeout))
            self._owned = True

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value`, on every rank."""
        import torch.distributed as dist

        box = [value if self.world.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's `value` on rank 0 (None elsewhere)."""
        import torch.distributed as dist

        out = [None] * self.world.size if self.world.is_main else None
        dist.gather_object(value, out, dst=0)
        return out

    def barrier(self) -> None:
        """Wait until every rank is here."""
        import torch.distributed as dist

        dist.barrier()

    def close(self) -> None:
        if self._owned:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._owned = False


def run_distributed(spec: RunSpec, jobs: list[Job], store: OutputStore, options: RunOptions,
                    reporter: Reporter, world: World) -> RunResult:
    """This rank's share of the run; on rank 0, the whole run's result once every rank is done."""
    group = Group(world)
    lock = None
    gathered = False
    try:
        decision: dict[str, Any] | None = None
        hashes = InputHashes.load(store) if world.is_main else None
        if world.is_main:
            try:
                lock = claim_output_dir(store)
                if warning := lock.takeover_warning():
                    reporter.note(warning)
                decision = _share_pending(spec, options, world.size, hashes)
            except SvdflowError as exc:
                decision = {"error": str(exc), "exit_code": exc.exit_code}
        decision = group.broadcast(decision)
        if "error" in decision:
            raise _error_from_rank0(decision)
        mine = set(decision["shares"][world.rank])
        executor = Executor(spec, [job for job in jobs if job.id in mine], store, options, reporter,
                            run_id=decision["run_id"], rank_of=world.rank, local_rank=world.local_rank,
                            guard=lock.check if lock is not None else None)
        result = executor.execute()
        # A rank whose output store failed stopped rendering; it still reports here, so that no rank
        # waits for it, and rank 0 says it once every share is recorded.
        everyone = group.gather({"statuses": result.statuses, "errors": result.errors, "qc_failed": result.qc_failed,
                                 "stopped": result.stopped})
        gathered = True
        if not world.is_main:
            return result
        merged = RunResult(spec, seconds=result.seconds, orphans=result.orphans)
        merged.statuses = {job_id: "up to date" for job_id in decision["up_to_date"]}
        merged.qc_failed = dict.fromkeys(decision["up_to_date_qc_failed"], "did not pass qc when it was recorded")
        for part in everyone:
            merged.statuses.update(part["statuses"])
            merged.errors.update(part["errors"])
            merged.qc_failed.update(part["qc_failed"])
            merged.stopped = merged.stopped or part["stopped"]
        if merged.stopped is not None and merged.stopped.gone:  # what is there now is not the run's folder
            raise merged.store_failure()
        index = RunIndex.load(store)
        try:
            if merged.stopped is None:
                index.finish([job.id for job in spec.jobs])
                hashes.save()  # every rank's is saved by now: this one holds them all
        except OutputStoreError as exc:  # the parts and sidecars keep the record
            merged.stopped = merged.stopped or exc
        merged.masters_bytes = index.masters_bytes()
        if merged.stopped is not None:
            raise merged.store_failure()
        reporter.note(f"merged {world.size} ranks' records into {store.path(INDEX_FILE)}")
        return merged
    finally:
        if lock is not None:
            lock.release()
        if gathered:
            # Every rank leaves the group together, once rank 0 has merged the shards: no rank tears
            # its connections down and exits while another still holds the group open (about one
            # launch in 15 aborted in gloo's teardown that way after every job was recorded, and the
            # launcher exited 1).
            group.barrier()
        group.close()


def _share_pending(spec: RunSpec, options: RunOptions, size: int, hashes: InputHashes) -> dict[str, Any]:
    """Rank 0's decision: which jobs render (or re-encode) where. Up-to-date jobs are nobody's work."""
    planned = plan_run(spec, only=options.only, force=options.force, hashes=hashes)
    pending = [p.job for p in planned if p.has_work]
    return {"shares": assign([(job.id, job.cost()) for job in pending], size),
            "up_to_date": [p.job.id for p in planned if not p.has_work],
            "up_to_date_qc_failed": [p.job.id for p in planned if not p.has_work and p.qc_passed is False],
            "run_id": new_run_id()}


def _error_from_rank0(decision: dict[str, Any]) -> SvdflowError:
    error = SvdflowError(decision["error"])
    error.exit_code = decision["exit_code"]
    return error
