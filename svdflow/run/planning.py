"""Which jobs would render, and why: the decision `plan` shows and `run` acts on."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from svdflow.collector import gc_paused
from svdflow.errors import InputError, UsageError
from svdflow.locations import Location
from svdflow.manifest.resolve import Job, RunSpec
from svdflow.outputs.clip import ClipShape, clip_shape
from svdflow.outputs.entry import IndexEntry, KeyMaterial
from svdflow.outputs.index import RunIndex
from svdflow.outputs.masters import master_problem
from svdflow.outputs.ownership import owned_names
from svdflow.outputs.storage import JobBytes
from svdflow.outputs.store import OutputStore
from svdflow.outputs.summaries import qc_text
from svdflow.quality.record import QualityRecord
from svdflow.quality.thresholds import QcThresholds
from svdflow.run.forked import map_forked
from svdflow.run.input_hashes import InputHashes
from svdflow.run.keys import JobKeys, job_keys, key_material

UP_TO_DATE = "up to date"
REENCODE = "re-encode"
REJUDGE = "re-judge"  # its qc thresholds changed: recorded again with the new verdict, nothing rendered
REROLL = "re-roll"  # re-judged as failing, with re-rolls left: renders its next attempt


@dataclass(frozen=True)
class Prior:
    """A done job's record re-judged against the qc thresholds it has now: what a re-judge records,
    and where a re-roll goes on from (its next attempt, and the kept one whose files are there)."""

    entry: IndexEntry  # as recorded
    quality: QualityRecord  # its attempts judged against the thresholds now

    @property
    def next_attempt(self) -> int:
        return len(self.quality.every_attempt(self.entry.seed))

    def rejudged_entry(self, quality: QualityRecord | None = None) -> IndexEntry:
        """The recorded entry with the new verdict (`quality`, else the re-judged one): its files, keys
        and scores as they are."""
        now = time.time()
        return self.entry.model_copy(update={
            "quality": quality or self.quality, "finished_unix": now,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))})


class _LazyMaterial:
    """PlannedJob.material: as given, else built from the job's keys' parts when first read."""

    def __get__(self, planned: PlannedJob | None, owner: type | None = None) -> KeyMaterial | None:
        if planned is None:
            return None  # the field's default
        material = planned._material
        if material is None and planned.keys is not None and planned.spec is not None:
            material = planned._material = key_material(planned.job, planned.input_sha256, planned.spec)
        return material

    def __set__(self, planned: PlannedJob, material: KeyMaterial | None) -> None:
        planned._material = material


@dataclass
class PlannedJob:
    """A job with its decision: `status` is "up to date", "re-encode" (only the files change, and the
    master to encode them from is sound), or one that renders: "new", "changed", "failed before",
    "outputs missing", "master missing", "master damaged", "forced", "input error" (never renders:
    it fails).

    `material` (what its keys hash) is built when first asked for, from `spec`: a plan of 100,000
    finished jobs compares keys (`keys`) and never needs it."""

    job: Job
    status: str
    key: str | None = None
    material: KeyMaterial | None = _LazyMaterial()
    reason: str = ""
    input_sha256: str | None = None
    owned: tuple[str, ...] = ()  # names in the output folder its record lists: the files it may replace
    prior: Prior | None = None  # re-judge and re-roll: the record, judged against the thresholds now
    qc_passed: bool | None = None  # the record's qc verdict (None: no thresholds, or not scored)
    keys: JobKeys | None = field(default=None, repr=False)
    spec: RunSpec | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (to a Ray worker) with its material and without the spec (the whole campaign)."""
        state = dict(vars(self))
        if state["spec"] is not None:
            state["_material"], state["spec"] = self.material, None
        return state

    @property
    def render_key(self) -> str | None:
        return self.keys.render_key if self.keys is not None else self.material.render_key if self.material else None

    @property
    def output_key(self) -> str | None:
        return self.keys.output_key if self.keys is not None else self.material.output_key if self.material else None

    @property
    def would_render(self) -> bool:
        return self.status not in (UP_TO_DATE, REENCODE, REJUDGE)

    @property
    def would_rejudge(self) -> bool:
        return self.status == REJUDGE

    @property
    def needs_input(self) -> bool:
        """Its input is read: it renders (or fails), or re-encodes (its files carry the input's record)."""
        return self.status not in (UP_TO_DATE, REJUDGE)

    @property
    def would_reencode(self) -> bool:
        return self.status == REENCODE

    @property
    def has_work(self) -> bool:
        """Something to do for it: render, re-encode (or fail)."""
        return self.status != UP_TO_DATE

    def to_json(self, storage: JobBytes | None = None) -> dict[str, Any]:
        """`storage`: the job's estimated files (svdflow.outputs.storage), as `plan --json` shows them.
        Its clip, origins and qc are shared with the jobs alike (100,000 of them in a plan):
        read them, do not change them."""
        job = self.job
        return {"id": job.id, "item_id": job.item_id, "image": job.image, "seed": job.seed,
                "seed_origin": job.seed_origin, "params": dict(vars(job.params)), "sweep": job.sweep,
                "clip": _clip_json(clip_shape(job.params)),
                "defined_at": job.defined_at, "origins": job.origins, "qc": _qc_json(job.qc),
                "status": self.status, "would_render": self.would_render, "would_reencode": self.would_reencode,
                "reason": self.reason, "key": self.key, "render_key": self.render_key, "output_key": self.output_key,
                "input_sha256": self.input_sha256,
                **({"storage": storage.to_json(self.would_render and self.status != "input error", self.would_reencode)}
                   if storage is not None else {})}


@lru_cache(maxsize=1024)  # a campaign's jobs share a few clip shapes and qc blocks: one dict each
def _clip_json(clip: ClipShape) -> dict[str, Any]:
    return {"rendered_frames": clip.rendered, "frames": clip.frames, "fps": clip.fps,
            "duration_s": round(clip.duration_s, 3)}


@lru_cache(maxsize=256)
def _qc_json(qc: QcThresholds | None) -> dict[str, Any] | None:
    return qc.model_dump(mode="json", exclude_none=True) if qc is not None else None


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
    """Compare the job's keys with what the index recorded, and its files and master with the folder
    as the index listed it (on an object store its master is taken as recorded: `_master_listed`).
    An up-to-date job is decided on its entry's summary alone."""
    keys = job_keys(job, input_sha256, spec)
    planned = PlannedJob(job, "new", keys.key, input_sha256=input_sha256, keys=keys, spec=spec)
    summary = index.summary(job.id)
    if summary is not None:
        planned.owned = owned_names(summary.outputs, summary.master)
        planned.qc_passed = summary.qc_passed
    if force:
        planned.status, planned.reason = "forced", "--force"
    elif summary is None:
        planned.reason = "not rendered yet"
    elif summary.status != "done":
        planned.status, planned.reason = "failed before", summary.error or ""
    elif summary.render_key != keys.render_key:
        entry = index.get(job.id)
        planned.status = "changed"
        planned.reason = explain_change(entry.key_material if entry else None, planned.material)
    elif summary.output_key != keys.output_key or not index.outputs_intact(job.id):
        _files_change(planned, index.get(job.id), spec, index)
    elif spec.masters and summary.master is not None and (problem := _master_listed(index, *summary.master)):
        # The record promises a master that is not there: render it again, as the record says.
        planned.status = "master missing" if "missing" in problem else "master damaged"
        planned.reason = problem
    else:
        planned.status = UP_TO_DATE
        if spec.masters and summary.master is None:
            planned.reason = "no master; a change of its files will render it again"
        if summary.qc is not None and summary.qc != _qc_text(job):
            _rejudge(planned, index.get(job.id))
    return planned


def _qc_text(job: Job) -> str:
    """The job's qc block as the record's summary writes it; once per block (jobs alike share one)."""
    return _thresholds_text(job.qc)


@lru_cache(maxsize=256)
def _thresholds_text(qc: QcThresholds | None) -> str:
    return qc_text(qc.model_dump(mode="json") if qc is not None else None)


def _rejudge(planned: PlannedJob, entry: IndexEntry | None) -> None:
    """Up to date but for its qc thresholds: judged again from the recorded scores. It renders only to
    re-roll: when it now fails and has re-rolls left beyond the attempts already made."""
    if entry is None or entry.quality is None:
        return
    job = planned.job
    prior = Prior(entry, entry.quality.rejudged(job.qc, entry.seed))
    planned.prior = prior
    quality = prior.quality
    if quality.passed is None:
        planned.status, planned.reason = REJUDGE, "qc removed: scores kept, no verdict"
    elif quality.passed:
        planned.status, planned.reason = REJUDGE, f"qc changed: attempt {quality.kept} passes"
    elif prior.next_attempt <= job.qc.rerolls:
        planned.status = REROLL
        planned.reason = (f"qc changed: attempt {quality.kept} fails {_failed(quality)}; re-roll "
                          f"{prior.next_attempt} of {job.qc.rerolls}")
    else:
        planned.status = REJUDGE
        planned.reason = f"qc changed: attempt {quality.kept} fails {_failed(quality)}; no re-rolls left"


def _failed(quality: QualityRecord) -> str:
    return ", ".join(failure.threshold for failure in quality.failures)


def _master_listed(index: RunIndex, file: str, size: int) -> str | None:
    """What is wrong with a recorded master by the folder's listing: missing, or another size.

    On an object store a master is taken as recorded: listing `.svdflow/masters/` is a request per
    1,000 names (about a third of a rerun's requests, for files a rerun does not read). Whatever reads one
    checks it first, a re-encode (`_files_change`: a missing one renders its job instead) and
    `svdflow qc`; `masters_note` says so in the plan."""
    if not index.store.is_local:
        return None
    found = index.file_size(file)
    if found is None:
        return f"master {file} is missing"
    if found != size:
        return f"master {file} has {found} bytes, recorded {size}"
    return None


def masters_note(spec: RunSpec, planned: list[PlannedJob]) -> str | None:
    """What the plan says when it took masters as recorded (`_master_listed`: an object store's folder),
    so that "up to date" is not read as "its master is there"."""
    if not spec.masters or Location.parse(spec.output_dir).is_local or not any(
            p.status in (UP_TO_DATE, REJUDGE, REROLL) for p in planned):
        return None
    return (f"masters: taken as recorded, not listed (on {spec.output_dir}, a listing is a request per 1,000 "
            "names); one missing or damaged is found when a re-encode or `svdflow qc` reads it, and a re-encode "
            "then renders its job again")


def _files_change(planned: PlannedJob, entry: IndexEntry | None, spec: RunSpec, index: RunIndex) -> None:
    """Same pixels, other or damaged files: re-encode from the master when it is sound, else render."""
    output_changed = entry is None or entry.output_key != planned.output_key
    why = explain_change(entry.key_material if entry else None, planned.material) if output_changed \
        else "an output file was removed or replaced"
    if not spec.masters:
        problem = "masters are off"
    elif entry is None or entry.master is None:
        problem = "no master to re-encode from"
    else:
        problem = master_problem(index.store, entry.master, verify=True)
    if problem is None:
        planned.status, planned.reason = REENCODE, why
    else:
        planned.status = "changed" if output_changed else "outputs missing"
        planned.reason = f"{why}; {problem}: rendering again"


def explain_change(old: KeyMaterial | None, new: KeyMaterial) -> str:
    """Name what changed between two key materials, e.g. "motion_bucket_id 127 -> 180", "crf 18 -> 23"."""
    if old is None:
        return "key changed"
    changes = _changed_params(old.render.params, new.render.params)
    for part in ("input_sha256", "model", "render_version", "fp8"):
        if getattr(old.render, part) != getattr(new.render, part):
            changes.append({"input_sha256": "input image"}.get(part, part) + " changed")
    changes += _changed_params(old.output.params, new.output.params)
    before, after = old.output.model_dump(exclude={"params"}), new.output.model_dump(exclude={"params"})
    for name, value in after.items():
        if name in before and before[name] != value:
            changes.append(f"{name} {_shown(before[name])} -> {_shown(value)}")
    return ", ".join(changes) or "key changed"


def _changed_params(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """A parameter absent on one side was at its default there (see `keyed_params`)."""
    names = list(after) + [name for name in before if name not in after]
    return [f"{name} {before.get(name, 'default')} -> {after.get(name, 'default')}"
            for name in names if before.get(name) != after.get(name)]


def _shown(value: Any) -> str:
    return ", ".join(value) if isinstance(value, list) else str(value)


def plan_run(spec: RunSpec, only: tuple[str, ...] = (), force: bool = False, workers: int = 8,
             hashes: InputHashes | None = None) -> list[PlannedJob]:
    """Decide every selected job. Inputs are hashed where `hashes` (default: the output folder's
    remembered ones) has no hash for them as they are now; a caller that records the run saves it."""
    # 100,000 jobs make a million small objects that live on: the cyclic collector would walk
    # them again and again (a third of the time on a big campaign), and there are no cycles to find.
    with gc_paused():
        return _plan_run(spec, only, force, workers, hashes)


def _plan_run(spec: RunSpec, only: tuple[str, ...], force: bool, workers: int,
              hashes: InputHashes | None) -> list[PlannedJob]:
    jobs = select_jobs(spec, only)
    store = OutputStore(spec.output_dir)
    index = RunIndex.load(store)
    if hashes is None:
        hashes = InputHashes.load(store)
    # Jobs of one item share an image: each image once.
    digests = hashes.hash_all(sorted({job.image for job in jobs}), workers)

    def decided(job: Job) -> PlannedJob:
        digest = digests[job.image]
        if isinstance(digest, InputError):
            return PlannedJob(job, "input error", reason=str(digest))
        return decide(job, digest, spec, index, force)

    # A decision is a few microseconds of keys and a look at the listing: 100,000 of them are shared
    # with forked copies of this process where there are CPUs for them.
    return map_forked(jobs, decided, _packed, lambda job, packed: _unpacked(job, packed, digests[job.image], spec))


def _packed(planned: PlannedJob) -> tuple | None:
    """A decision as a forked child hands it back (svdflow.run.forked): all but the job, its input's
    hash and the spec, which the parent has. Its material is built again when asked for, as it is
    for any decision; a re-judge's record (`prior`) and an input error are decided again instead."""
    if planned.keys is None or planned.prior is not None:
        return None
    return planned.status, planned.reason, *planned.keys, planned.owned, planned.qc_passed


def _unpacked(job: Job, packed: tuple, input_sha256: str, spec: RunSpec) -> PlannedJob:
    status, reason, key, render_key, output_key, owned, qc_passed = packed
    return PlannedJob(job, status, key, reason=reason, input_sha256=input_sha256, owned=owned, qc_passed=qc_passed,
                      keys=JobKeys(key, render_key, output_key), spec=spec)
