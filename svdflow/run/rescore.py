"""`svdflow qc DIR`: quality scores for the jobs of an output folder that a run did not score (folders
rendered before scores existed), without rendering anything.

Each done job is scored from its lossless master (the frames its render made, checked against the
entry's frames_sha256) against its input image, fetched again, checked against the recorded sha256 and
resized exactly as the render conditioned on it (`svdflow.inputs.resize_image`). A folder with no
master for a job (svdflow 0.1, `masters: false`) is scored from the best file it wrote instead: PNG
frames (lossless), else ProRes, H.264, H.265, VP9, WebP, GIF (lossy: the result says so, since the
codec's loss shows in flicker and similarity); only while those files hold the rendered frames as
they are (no loop or interpolate). The scores go into the job's entry (`IndexEntry.quality`) through
the record's own append (`RunIndex.amend`), one clip in memory at a time, under the folder's lock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from svdflow.errors import (
    EXIT_JOBS_FAILED,
    EXIT_OK,
    EXIT_QC_FAILED,
    InputError,
    JobError,
    MasterError,
    UsageError,
)
from svdflow.inputs import load_input
from svdflow.outputs.clip import clip_shape
from svdflow.outputs.entry import IndexEntry
from svdflow.outputs.index import INDEX_FILE, RunIndex
from svdflow.outputs.lock import claim_output_dir
from svdflow.outputs.masters import master_name, read_master
from svdflow.outputs.store import OutputStore
from svdflow.outputs.writers import SUFFIXES
from svdflow.quality.record import QualityRecord
from svdflow.quality.score import score_clip
from svdflow.quality.scores import QualityScores
from svdflow.quality.thresholds import QcThresholds
from svdflow.quality.verdict import judge
from svdflow.run.keys import frames_sha256

# A job without a master is scored from the first of its files found here: lossless first, then the
# formats that keep the most of the frames.
FILE_SOURCES = ("frames", "prores", "mp4", "hevc", "webm", "webp", "gif")
LOSSLESS_SOURCES = ("frames",)

Outcome = Literal["scored", "re-judged", "skipped", "failed"]


@dataclass(frozen=True)
class JobScore:
    """What `svdflow qc` did with one job."""

    id: str
    outcome: Outcome
    source: str | None = None  # "master", or the file the frames were decoded from
    lossy: bool = False  # scored from a lossy file: its codec's loss is in the scores
    quality: QualityRecord | None = None
    reason: str | None = None  # why skipped or failed (one line)
    seconds: float = 0.0  # reading and scoring

    def line(self) -> str:
        """The job's progress line."""
        if self.outcome in ("skipped", "failed"):
            return f"{self.id}: {'FAILED' if self.outcome == 'failed' else 'skipped'}: {self.reason}"
        where = "its recorded scores" if self.source == "record" else self.source
        text = f"{self.id}: {self.outcome} from {where}"
        if self.lossy:
            text += " (a lossy file: no master; its codec's loss is in the scores)"
        if self.outcome == "scored":
            text += f" in {self.seconds:.2f} s"
        if self.quality is not None:
            text += f": {quality_text(self.quality)}"
        return text

    def to_json(self) -> dict:
        return {"event": "job", "id": self.id, "outcome": self.outcome, "source": self.source, "lossy": self.lossy,
                "reason": self.reason, "seconds": round(self.seconds, 4),
                "quality": self.quality.model_dump(mode="json") if self.quality else None}


@dataclass
class QcResult:
    """The counts of a `svdflow qc` over a folder (per-job results go to its callback, not here: a
    campaign of 100,000 jobs keeps none of them)."""

    folder: str
    jobs: int = 0
    scored: int = 0
    lossy: int = 0
    rejudged: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)  # ids of jobs that could not be scored
    not_passed: list[str] = field(default_factory=list)  # ids whose (new) verdict failed a threshold
    score_seconds: float = 0.0  # reading and scoring the scored jobs

    @property
    def exit_code(self) -> int:
        """1 when a job could not be scored, else 4 when one did not pass (as a run's), else 0."""
        return EXIT_JOBS_FAILED if self.failed else EXIT_QC_FAILED if self.not_passed else EXIT_OK

    def summary(self) -> str:
        parts = [f"{self.scored} scored" + (f" ({self.lossy} from a lossy file: no master)" if self.lossy else "")]
        if self.rejudged:
            parts.append(f"{self.rejudged} re-judged from their recorded scores")
        if self.skipped:
            parts.append(f"{self.skipped} skipped")
        if self.failed:
            parts.append(f"{len(self.failed)} could not be scored")
        if self.not_passed:
            parts.append(f"{len(self.not_passed)} did not pass")
        per_clip = f"; {1000 * self.score_seconds / self.scored:.0f} ms per clip" if self.scored else ""
        return f"{self.folder}: {self.jobs} jobs: {', '.join(parts)}{per_clip}"

    def to_json(self) -> dict:
        return {"event": "summary", "folder": self.folder, "jobs": self.jobs, "scored": self.scored,
                "lossy": self.lossy, "rejudged": self.rejudged, "skipped": self.skipped, "failed": self.failed,
                "not_passed": self.not_passed, "exit_code": self.exit_code}


def quality_text(quality: QualityRecord) -> str:
    """A job's scores and verdict in one line."""
    scores = quality.scores
    text = (f"motion {scores.motion.mean:g} px/frame, flicker residual {scores.flicker.residual:g}, "
            f"SSIM first {scores.fidelity.first_ssim:g} last {scores.fidelity.last_ssim:g}")
    if quality.passed is True:
        text += "; passed"
    elif quality.passed is False:
        text += "; did not pass: " + ", ".join(
            f"{f.threshold} ({f.value:g} {'<' if f.threshold.startswith('min') else '>'} {f.limit:g})"
            for f in quality.failures)
    return text


def score_folder(output_dir: str, *, thresholds: QcThresholds | None = None, force: bool = False,
                 on_job: Callable[[JobScore, int, int], None] | None = None) -> QcResult:
    """Score every done job of `output_dir` that has no scores yet (every one with `force`) and record
    them. `thresholds` judge the scores (and re-judge jobs already scored under other thresholds, from
    their recorded scores); without them a job keeps the thresholds it was recorded with, if any.
    `on_job(result, n, total)` is called after each job. UsageError when the folder holds no record;
    the ownership rules' and the lock's errors as `svdflow run` has them."""
    store = OutputStore(str(output_dir))
    if store.is_local and not os.path.isdir(store.root):
        raise UsageError(f"{store.url}: no such folder; pass the output folder of a run")
    lock = claim_output_dir(store)
    try:
        index = RunIndex.load(store)
        if index.unreadable == "missing":
            raise UsageError(f"{store.url}: no {INDEX_FILE} here; pass the output folder of a run")
        if index.unreadable:
            raise UsageError(f"{store.url}: its record {index.unreadable}; pass the output folder of a run")
        result = QcResult(folder=store.url, jobs=len(index))
        try:
            for number, job_id in enumerate(index.ids(), 1):
                lock.check()
                job = _score_job(store, index, job_id, thresholds, force)
                _count(result, job)
                if on_job is not None:
                    on_job(job, number, result.jobs)
        finally:
            index.finish()  # what was scored is recorded, interrupted or not
        return result
    finally:
        lock.release()


def _count(result: QcResult, job: JobScore) -> None:
    if job.outcome == "scored":
        result.scored += 1
        result.lossy += job.lossy
        result.score_seconds += job.seconds
    elif job.outcome == "re-judged":
        result.rejudged += 1
    elif job.outcome == "skipped":
        result.skipped += 1
    else:
        result.failed.append(job.id)
    if job.outcome in ("scored", "re-judged") and job.quality is not None and job.quality.passed is False:
        result.not_passed.append(job.id)


def _score_job(store: OutputStore, index: RunIndex, job_id: str, thresholds: QcThresholds | None,
               force: bool) -> JobScore:
    entry = index.get(job_id)
    if entry is None:
        return JobScore(job_id, "skipped", reason="its entry could not be read (see the record's problems)")
    if entry.status != "done":
        return JobScore(job_id, "skipped", reason="it failed: no frames to score")
    prior = entry.quality
    if prior is not None and not force:
        if thresholds is None or thresholds == prior.thresholds:
            return JobScore(job_id, "skipped", quality=prior, reason="already scored (--force scores it again)")
        quality = prior.rejudged(thresholds, entry.seed)  # every attempt judged again, as a run re-judges
        index.amend(entry.model_copy(update={"quality": quality}))
        index.flush_if_due()
        return JobScore(job_id, "re-judged", source="record", quality=quality)
    started = time.perf_counter()
    try:
        frames, source, lossy = _frames(store, entry)
        scores = score_clip(frames, _conditioning_image(entry), fps=float(entry.params.fps))
    except JobError as exc:
        return JobScore(job_id, "failed", reason=str(exc), seconds=time.perf_counter() - started)
    del frames  # one clip in memory at a time
    seconds = time.perf_counter() - started
    quality = _quality(scores, thresholds or (prior.thresholds if prior else None), prior)
    index.amend(entry.model_copy(update={"quality": quality}))
    index.flush_if_due()
    return JobScore(job_id, "scored", source=source, lossy=lossy, quality=quality, seconds=seconds)


def _quality(scores: QualityScores, thresholds: QcThresholds | None, prior: QualityRecord | None) -> QualityRecord:
    """The record of the frames' scores; a re-rolled job keeps its attempts, the kept one's scores and
    verdict replaced by these."""
    verdict = judge(scores, thresholds) if thresholds is not None else None
    kept = prior.kept if prior is not None else 0
    attempts = prior.attempts if prior is not None else ()
    if kept < len(attempts):
        update = {"scores": scores, **({"verdict": verdict} if verdict is not None else {})}
        attempts = tuple(a.model_copy(update=update) if a.attempt == kept else a for a in attempts)
    return QualityRecord(scores=scores, thresholds=thresholds, passed=verdict.passed if verdict else None,
                         failures=verdict.failures if verdict else (), kept=kept, attempts=attempts)


def _frames(store: OutputStore, entry: IndexEntry) -> tuple[np.ndarray, str, bool]:
    """The job's rendered frames: (frames, where from, whether from a lossy file)."""
    params = entry.params
    master = entry.master
    missing = None
    if master is not None:
        if master.file != master_name(entry.id):
            raise MasterError(f"job '{entry.id}': its master is recorded as {master.file!r}, not svdflow's "
                              f"{master_name(entry.id)}; not read")
        problem = _file_problem(store, master.file)
        if problem is None:
            frames = read_master(store, master, params.width, params.height)
            if entry.frames_sha256 and frames_sha256(frames) != entry.frames_sha256:
                raise MasterError(f"job '{entry.id}': master {master.file} does not hold the recorded frames "
                                  f"(sha256 {frames_sha256(frames)[:12]}, recorded {entry.frames_sha256[:12]}); "
                                  f"render the job again (svdflow run --force --only {entry.id})")
            return frames, "master", False
        missing = f"master {master.file} {problem}"
    return _frames_from_file(store, entry, missing)


def _frames_from_file(store: OutputStore, entry: IndexEntry, missing: str | None) -> tuple[np.ndarray, str, bool]:
    params = entry.params
    why = missing or "this folder keeps no master for it"
    clip = clip_shape(params)
    if clip.frames != clip.rendered:
        raise MasterError(f"job '{entry.id}': {why}, and its files hold looped or interpolated frames, not the "
                          f"render's; render it again with masters to score it")
    if not store.is_local:
        raise MasterError(f"job '{entry.id}': {why}, and its files are read only from a local folder; copy the "
                          f"folder here and run svdflow qc on the copy")
    recorded = {output.format: output.file for output in entry.outputs}
    for fmt in FILE_SOURCES:
        name = entry.id + SUFFIXES[fmt]
        # Only the file svdflow names for this job, whatever else the entry lists.
        if recorded.get(fmt) != name or _file_problem(store, name, folder=fmt == "frames") is not None:
            continue
        frames = _decode(os.path.join(store.root, name), fmt)
        expected = (clip.rendered, params.height, params.width, 3)
        if frames.shape != expected:
            raise MasterError(f"job '{entry.id}': {why}, and {name} holds {frames.shape[0]} frames of "
                              f"{frames.shape[2]}x{frames.shape[1]}, not the render's {clip.rendered} of "
                              f"{params.width}x{params.height}")
        return frames, name, fmt not in LOSSLESS_SOURCES
    raise MasterError(f"job '{entry.id}': {why}, and none of its files is here to score; render it again")


def _file_problem(store: OutputStore, name: str, *, folder: bool = False) -> str | None:
    """Why svdflow will not read `name` of the folder (missing, a link), or None."""
    if not store.is_local:
        return None if store.exists(name) else "is missing"
    path = os.path.join(store.root, name)
    if os.path.islink(path) or any(os.path.islink(os.path.join(store.root, *name.split("/")[:i]))
                                   for i in range(1, name.count("/") + 1)):
        return "is a symbolic link (svdflow reads nothing through a link in its folder)"
    if not (os.path.isdir(path) if folder else os.path.isfile(path)):
        return "is missing"
    return None


def _decode(path: str, fmt: str) -> np.ndarray:
    from PIL import Image, ImageSequence

    if fmt == "frames":
        names = sorted(n for n in os.listdir(path) if n.endswith(".png") and not n.startswith("."))
        frames = []
        for name in names:
            with Image.open(os.path.join(path, name)) as image:
                frames.append(_rgb(image))
        return np.stack(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8)
    if fmt in ("webp", "gif"):
        with Image.open(path) as image:
            return np.stack([_rgb(frame) for frame in ImageSequence.Iterator(image)])
    return np.stack(list(_video_frames(path)))


def _rgb(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _video_frames(path: str) -> Iterator[np.ndarray]:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
    try:
        meta = next(reader)
        width, height = meta["size"]
        for data in reader:
            yield np.frombuffer(data, np.uint8).reshape(height, width, 3)
    finally:
        reader.close()


def _conditioning_image(entry: IndexEntry) -> np.ndarray:
    """The input as the render conditioned on it: the recorded bytes, resized as the pipeline did."""
    uri, recorded, params = entry.input.uri, entry.input.sha256, entry.params
    loaded = load_input(uri, params.width, params.height, params.resize)
    if recorded and loaded.sha256 != recorded:
        raise InputError(f"job '{entry.id}': {uri}: the input changed since the job was rendered (sha256 "
                         f"{loaded.sha256[:12]}, recorded {recorded[:12]}); restore the original to score it")
    return _rgb(loaded.image)


def parse_thresholds(text: str) -> QcThresholds:
    """`--thresholds min_motion=2,max_flicker=8` as QcThresholds; UsageError naming the bad part."""
    from pydantic import ValidationError

    values: dict[str, float | int] = {}
    names = [name for name in QcThresholds.model_fields if name != "rerolls"]
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in names:
            raise UsageError(f"--thresholds: {part!r} is not NAME=VALUE of a qc threshold; use one of "
                             f"{', '.join(names)}")
        integer = QcThresholds.model_fields[name].annotation == (int | None)
        try:
            values[name] = int(value) if integer else float(value)
        except ValueError:
            raise UsageError(f"--thresholds: {name}={value!r} is not {'a whole' if integer else 'a'} number; "
                             f"write e.g. {name}={'2' if integer else '0.5'}") from None
    try:
        return QcThresholds(**values)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in error["loc"]) or "thresholds"
        raise UsageError(f"--thresholds: {where}: {error['msg']}") from None
