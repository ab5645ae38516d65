"""Which jobs would render, and why: the decision `plan` shows and `run` acts on."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from svdflow.errors import InputError, UsageError
from svdflow.inputs import fetch_bytes
from svdflow.manifest.resolve import Job, RunSpec
from svdflow.outputs.entry import KeyMaterial
from svdflow.outputs.index import RunIndex
from svdflow.outputs.store import OutputStore
from svdflow.run.keys import content_key, key_material

UP_TO_DATE = "up to date"


@dataclass
class PlannedJob:
    """A job with its decision: `status` is "up to date", "new", "changed", "failed before",
    "outputs missing", "forced" or "input error"."""

    job: Job
    status: str
    key: str | None = None
    material: KeyMaterial | None = None
    reason: str = ""
    input_sha256: str | None = None

    @property
    def would_render(self) -> bool:
        return self.status != UP_TO_DATE

    def to_json(self) -> dict[str, Any]:
        job = self.job
        return {"id": job.id, "item_id": job.item_id, "image": job.image, "seed": job.seed,
                "seed_origin": job.seed_origin, "params": job.params.model_dump(), "sweep": job.sweep,
                "status": self.status, "would_render": self.would_render, "reason": self.reason,
                "key": self.key, "input_sha256": self.input_sha256}


def select_jobs(spec: RunSpec, only: tuple[str, ...] | list[str] = ()) -> list[Job]:
    """The jobs to consider: all, or those named by --only (unknown ids are a usage error)."""
    if not only:
        return list(spec.jobs)
    known = {job.id for job in spec.jobs}
    unknown = [job_id for job_id in only if job_id not in known]
    if unknown:
        shown = _display_path(spec.manifest_path)
        raise UsageError(f"--only {unknown[0]}: no such job in {shown}; run `svdflow plan {shown}` to list "
                         "the job ids")
    wanted = set(only)
    return [job for job in spec.jobs if job.id in wanted]


def _display_path(path) -> str:
    """The manifest's path as the user would type it from here."""
    relative = os.path.relpath(path)
    return path.as_posix() if relative.startswith("..") else relative


def decide(job: Job, input_sha256: str, spec: RunSpec, index: RunIndex, force: bool = False) -> PlannedJob:
    """Compare the job's content key with what the index recorded."""
    material = key_material(job, input_sha256, spec)
    key = content_key(material)
    planned = PlannedJob(job, "new", key, material, input_sha256=input_sha256)
    entry = index.get(job.id)
    if force:
        planned.status, planned.reason = "forced", "--force"
    elif entry is None:
        planned.reason = "not rendered yet"
    elif entry.status != "done":
        planned.status, planned.reason = "failed before", entry.error.message if entry.error else ""
    elif entry.key != key:
        planned.status, planned.reason = "changed", explain_change(entry.key_material, material)
    elif not index.is_up_to_date(job.id, key):
        planned.status, planned.reason = "outputs missing", "an output file was removed or replaced"
    else:
        planned.status = UP_TO_DATE
    return planned


def explain_change(old: KeyMaterial | None, new: KeyMaterial) -> str:
    """Name what changed between two key materials, e.g. "motion_bucket_id 127 -> 180"."""
    if old is None:
        return "key changed"
    changes = []
    for name in type(new.params).model_fields:  # attributes: a dump leaves out new parameters at their defaults
        before, value = getattr(old.params, name), getattr(new.params, name)
        if before != value:
            changes.append(f"{name} {before} -> {value}")
    for part in ("input_sha256", "model", "output", "render_version", "fp8"):
        if getattr(old, part) != getattr(new, part):
            changes.append({"input_sha256": "input image"}.get(part, part) + " changed")
    return ", ".join(changes) or "key changed"


def input_sha256(uri: str) -> str:
    return hashlib.sha256(fetch_bytes(uri)).hexdigest()


def plan_run(spec: RunSpec, only: tuple[str, ...] = (), force: bool = False, workers: int = 8) -> list[PlannedJob]:
    """Decide every selected job; inputs are hashed concurrently (remote ones are downloaded)."""
    jobs = select_jobs(spec, only)
    index = RunIndex.load(OutputStore(spec.output_dir))
    # Jobs of one item share an image: hash each image once.
    images = sorted({job.image for job in jobs})
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(images)))) as pool:
        hashes = dict(zip(images, pool.map(_safe_hash, images)))
    planned = []
    for job in jobs:
        digest = hashes[job.image]
        if isinstance(digest, InputError):
            planned.append(PlannedJob(job, "input error", reason=str(digest)))
        else:
            planned.append(decide(job, digest, spec, index, force))
    return planned


def _safe_hash(uri: str) -> str | InputError:
    try:
        return input_sha256(uri)
    except InputError as exc:
        return exc
