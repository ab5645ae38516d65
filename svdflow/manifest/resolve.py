"""Turn a validated manifest into the list of jobs to render.

Resolution is pure: no file is read and no model is touched, so `validate` and `plan` stay fast on
manifests with tens of thousands of items.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import stat
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from svdflow.errors import ManifestError, Problem, in_file_order
from svdflow.locations import Location, is_url
from svdflow.manifest.loader import LoadedManifest, SourceMap, gc_paused
from svdflow.manifest.schema import (
    MAX_SEED,
    PARAMETERS,
    TRAINED_MAX_MOTION_BUCKET,
    TRAINED_SIZES,
    Hardware,
    Item,
    JobParams,
    Manifest,
    ModelSource,
)

# Field order of a job's parameters everywhere they are shown or hashed.
PARAMETER_NAMES = tuple(PARAMETERS)
# A job called "index" would write its sidecar index.json over the run's index.
RESERVED_JOB_IDS = frozenset({"index"})


@dataclass(frozen=True)
class Job:
    """One video to render: everything that decides its pixels, resolved."""

    id: str
    item_id: str
    image: str  # absolute local path or URL
    params: JobParams  # every parameter resolved; playback_fps never null
    seed_origin: str  # "item" (set on the item), "sweep" (a swept value) or "derived" (from base seed + item id)
    sweep: dict[str, Any] = field(default_factory=dict)  # the swept values that made this job

    @property
    def seed(self) -> int:
        return self.params.seed

    def cost(self) -> float:
        """Relative render cost, for balancing work: UNet work ~ pixels x frames x steps (x2 with CFG)."""
        p = self.params
        guided = 2 if p.max_guidance_scale > 1.0 else 1
        return p.width * p.height * p.num_frames * (p.num_inference_steps * guided + 1)


@dataclass(frozen=True)
class RunSpec:
    """A manifest resolved: the campaign's settings and its jobs, in file order."""

    name: str
    manifest_path: Path
    model: ModelSource
    hardware: Hardware
    output_dir: str  # absolute local path or URL
    formats: tuple[str, ...]
    crf: int
    jobs: tuple[Job, ...]
    warnings: tuple[Problem, ...] = ()
    prores_profile: str = "hq"
    masters: bool = True

    def job(self, job_id: str) -> Job:
        for job in self.jobs:
            if job.id == job_id:
                return job
        raise KeyError(job_id)


def derive_seed(base_seed: int, item_id: str) -> int:
    """A seed from (base seed, item id) alone: position, batch and process never change it.

    Sweep variations of one item share it, so a motion sweep compares motion, not noise.
    """
    digest = hashlib.sha256(f"svdflow-seed:{base_seed}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & MAX_SEED


def resolve(loaded: LoadedManifest) -> RunSpec:
    """Merge defaults into items, expand sweeps, derive seeds and paths; collect every problem."""
    with gc_paused():
        return _resolve(loaded)


def _resolve(loaded: LoadedManifest) -> RunSpec:
    manifest, source = loaded.manifest, loaded.source
    base_dir = loaded.path.parent
    name = manifest.name or loaded.path.stem
    problems: list[Problem] = []
    warnings: dict[Problem, None] = {}  # ordered and unique: sweeps repeat their item's warnings
    images = _LocalImages(base_dir)

    output_dir = _output_dir(manifest, name, base_dir, source, problems)
    jobs: list[Job] = []
    ids = _JobIds(source)
    defaults = manifest.defaults.model_dump()
    for index, item in enumerate(manifest.items):
        if problem := ids.item_problem(item.id, index):
            problems.append(problem)
            continue
        for job, where in _expand(item, index, defaults, images.locate):
            if problem := ids.problem(job.id, where):
                problems.append(problem)
                continue
            jobs.append(job)
            for warning in _job_warnings(job, index, source, manifest.model.source != "builtin:tiny", images):
                warnings[warning] = None
    if problems:
        raise ManifestError(in_file_order(problems))
    return RunSpec(
        name=name,
        manifest_path=loaded.path,
        model=manifest.model,
        hardware=manifest.hardware,
        output_dir=output_dir,
        formats=tuple(manifest.output.formats),
        crf=manifest.output.crf,
        jobs=tuple(jobs),
        warnings=tuple(warnings),
        prores_profile=manifest.output.prores_profile,
        masters=manifest.output.masters,
    )


def _output_dir(manifest: Manifest, name: str, base_dir: Path, source: SourceMap, problems: list[Problem]) -> str:
    template = manifest.output.dir
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        unknown = [f for f in fields if f != "name"]
        if unknown:
            problems.append(source.problem(("output", "dir"), f"output.dir: unknown placeholder {{{unknown[0]}}} in "
                                                              f"{template!r}; the only placeholder is {{name}}"))
            return template
        expanded = template.format(name=name)
    except (ValueError, IndexError) as exc:
        problems.append(source.problem(("output", "dir"), f"output.dir: {template!r} is not a valid template "
                                                          f"({exc}); write braces as {{{{ and }}}}"))
        return template
    location = Location.parse(expanded, base_dir)
    return str(Path(location.path).resolve()) if location.is_local else location.text


def _expand(item: Any, index: int, defaults: dict[str, Any], locate):
    """Yield (job, source path of what defines its id) for one item, sweeps expanded in key order."""
    own = {k: v for k, v in item.model_dump(include=set(PARAMETER_NAMES)).items() if v is not None}
    params = {**defaults, **own}
    if "seed" in own:
        origin = "item"
    else:
        params["seed"] = derive_seed(defaults["seed"], item.id)
        origin = "derived"
    image = locate(item.image)
    for job_id, where, combo in _job_ids(item, index):
        job_origin = "sweep" if "seed" in combo else origin
        yield _job(job_id, item.id, image, {**params, **combo}, job_origin, combo), where


def _job_ids(item: Any, index: int):
    """Yield (job id, source path of what defines it, the swept values) for one item's jobs."""
    swept = {k: v for k, v in (item.sweep.model_dump() if item.sweep else {}).items() if v is not None}
    if not swept:
        yield item.id, ("items", index, "id"), {}
        return
    keys = list(swept)
    for values in itertools.product(*(swept[k] for k in keys)):
        combo = dict(zip(keys, values, strict=True))
        suffix = "-".join(f"{PARAMETERS[k].sweep_label}{_id_value(v)}" for k, v in combo.items())
        yield f"{item.id}-{suffix}", ("items", index, "sweep"), combo


class _JobIds:
    """The item and job ids seen so far, and what is wrong with the next one: reserved, or already
    used. Item ids are unique even when their sweeps would give different job ids: an item's id
    derives its seed and groups its sweep in the report."""

    def __init__(self, source: SourceMap):
        self.source = source
        self.first_seen: dict[str, tuple] = {}
        self.items: dict[str, int] = {}

    def item_problem(self, item_id: str, index: int) -> Problem | None:
        first = self.items.setdefault(item_id, index)
        if first == index:
            return None
        line = self.source.problem(("items", first, "id"), "").line
        return self.source.problem(("items", index, "id"), f"item id '{item_id}' is already used by "
                                                           f"items[{first}] (line {line}); give each item a unique id")

    def problem(self, job_id: str, where: tuple) -> Problem | None:
        if job_id in RESERVED_JOB_IDS:
            return self.source.problem(where, f"job id '{job_id}' is reserved (its sidecar would overwrite "
                                              f"{job_id}.json); rename the item")
        if job_id in self.first_seen:
            return self.source.problem(where, _collision(job_id, where, self.first_seen[job_id], self.source))
        self.first_seen[job_id] = where
        return None


def job_id_problems(raw: Any, source: SourceMap) -> list[Problem]:
    """The id problems among the items that are valid on their own, for a file whose schema check
    failed elsewhere: reported with the schema's problems, one round of fixes shows them all."""
    items = raw.get("items") if isinstance(raw, dict) else None
    if not isinstance(items, list):
        return []
    ids, problems = _JobIds(source), []
    for index, raw_item in enumerate(items):
        try:
            item = Item.model_validate(raw_item)
        except ValidationError:
            continue  # the schema's problems already name it
        if problem := ids.item_problem(item.id, index):
            problems.append(problem)
            continue
        problems += [p for job_id, where, _ in _job_ids(item, index) if (p := ids.problem(job_id, where))]
    return problems


def _job(job_id: str, item_id: str, image: str, params: dict[str, Any], origin: str, sweep: dict) -> Job:
    resolved = {name: params[name] for name in PARAMETER_NAMES}
    if resolved["playback_fps"] is None:
        resolved["playback_fps"] = float(resolved["fps"])
    # Validated already (the manifest's models): constructing is 20x cheaper than validating again.
    return Job(job_id, item_id, image, JobParams.model_construct(**resolved), origin, sweep)


class _LocalImages:
    """Item images as absolute paths (URLs as given), symlinks resolved like Path.resolve().

    Items usually share a few folders: resolving each folder once and each image with one lstat
    keeps resolution of 10,000 distinct images to 10,000 system calls instead of ~50,000.
    """

    def __init__(self, base_dir: Path):
        self.base_dir = str(base_dir)
        self._dirs: dict[str, str] = {}
        self._paths: dict[str, str] = {}
        self._exists: dict[str, bool] = {}

    def locate(self, image: str) -> str:
        if _is_written_as_url(image):
            return image
        path = self._paths.get(image)
        if path is None:
            path = self._paths[image] = self._locate(image)
        return path

    def exists(self, path: str) -> bool:
        """Whether a located image is there; always true for URLs (they are not fetched here)."""
        if _is_written_as_url(path):
            return True
        if path not in self._exists:
            self._exists[path] = os.path.exists(path)
        return self._exists[path]

    def _locate(self, image: str) -> str:
        head, tail = os.path.split(os.path.join(self.base_dir, os.path.expanduser(image)))
        if tail in ("", ".", ".."):
            return os.path.realpath(os.path.join(head, tail))
        real_head = self._dirs.get(head)
        if real_head is None:
            real_head = self._dirs[head] = os.path.realpath(head)
        path = os.path.join(real_head, tail)
        try:
            is_link = stat.S_ISLNK(os.lstat(path).st_mode)
        except OSError:
            self._exists[path] = False
            return path
        if is_link:
            return os.path.realpath(path)
        self._exists[path] = True
        return path


def _is_written_as_url(image: str) -> bool:
    """A URL (file:// ones too: fsspec reads them, and the index records them as written)."""
    return is_url(image) or image.startswith(("file://", "local://"))


def _id_value(value: Any) -> str:
    if isinstance(value, float):
        return repr(value).replace("-", "n")
    return str(value).replace("-", "n")


def _collision(job_id: str, where: tuple, first: tuple, source: SourceMap) -> str:
    """Say which items clash, and whether the id was written or generated by a sweep."""
    line = source.problem(first, "").line

    def by(path: tuple) -> str:
        return f"the sweep of items[{path[1]}]" if path[-1] == "sweep" else f"items[{path[1]}]"

    if where == first:
        return f"the sweep of items[{where[1]}] generates job id '{job_id}' twice; list each value once"
    # Two unswept items with one id never get here: _JobIds.item_problem reports them first.
    return (f"job id '{job_id}' from {by(where)} is already used by {by(first)} (line {line}); rename one of "
            f"the items, or change the sweep so the generated ids differ")


def _job_warnings(job: Job, index: int, source: SourceMap, trained: bool, images: _LocalImages) -> list[Problem]:
    """Legal but likely unintended settings, reported once per item (sweeps would repeat them)."""
    p, out = job.params, []

    def warn(key: str, message: str) -> None:
        path = ("items", index, key) if ("items", index, key) in source.values else ("defaults", key)
        out.append(source.problem(path, f"item '{job.item_id}': {message}"))

    if trained and (p.width, p.height) not in TRAINED_SIZES:
        warn("width", f"{p.width}x{p.height} is not a size SVD was trained at (1024x576 or 576x1024); "
                      "expect weaker results")
    if trained and p.motion_bucket_id > TRAINED_MAX_MOTION_BUCKET:
        warn("motion_bucket_id", f"motion_bucket_id {p.motion_bucket_id} is above the trained range "
                                 f"0-{TRAINED_MAX_MOTION_BUCKET}; motion may break up")
    if p.min_guidance_scale > p.max_guidance_scale:
        warn("min_guidance_scale", f"min_guidance_scale {p.min_guidance_scale} is above max_guidance_scale "
                                   f"{p.max_guidance_scale}; guidance will fall across frames")
    if not images.exists(job.image):
        warn("image", f"image {job.image} does not exist; its jobs will fail until it does")
    return out
