"""Turn a validated manifest into the list of jobs to render.

Items come from items.py (written ones, glob matches, table rows); here they get their defaults
(the manifest's, the model's, svdflow's), their sweeps, seeds and ids, and the warnings about
legal but unlikely settings. No image is read and no model is loaded: `validate` and `plan` stay
fast on campaigns of 100,000 items. Globs are listed and tables read, once.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from svdflow.collector import gc_paused
from svdflow.errors import ManifestError, Problem, in_file_order
from svdflow.locations import Location, text_refusal
from svdflow.manifest.items import ItemSpec, LocalImages, Origin, RowOrigin, gather_items
from svdflow.manifest.limits import JobBudget, sweep_jobs, sweep_lengths
from svdflow.manifest.loader import LoadedManifest, SourceMap
from svdflow.manifest.schema import (
    ID_PATTERN,
    MAX_SEED,
    PARAMETERS,
    RESERVED_JOB_IDS,
    TRAINED_MAX_MOTION_BUCKET,
    TRAINED_SIZES,
    Hardware,
    Item,
    JobParams,
    Manifest,
    ModelSource,
)
from svdflow.models.defaults import (
    ModelConfigUnreadable,
    ModelDefaults,
    fixed_model_defaults,
    model_defaults,
)
from svdflow.models.source import BUILTINS
from svdflow.outputs.clip import clip_shape, default_loop_frames, max_loop_frames, rendered_frames
from svdflow.quality.thresholds import QcThresholds

# Field order of a job's parameters everywhere they are shown or hashed.
PARAMETER_NAMES = tuple(PARAMETERS)
# A job's written clip is held in memory whole while it is looped, interpolated and encoded: past this
# many bytes of uint8 frames (about 2,400 frames of 1024x576), a warning says so.
CLIP_MEMORY_WARNING_BYTES = 4 * 2**30
# Where a job's value came from, most specific first ("derived": a seed from (base seed, item id)).
ORIGINS = ("sweep", "table", "item", "defaults", "model", "svdflow", "derived")


@dataclass(frozen=True)
class Job:
    """One video to render: everything that decides its pixels, resolved."""

    id: str
    item_id: str
    image: str  # absolute local path or URL
    params: JobParams  # every parameter resolved; playback_fps never null
    seed_origin: str  # "item" (set on the item or its row), "sweep" (a swept value) or "derived" (base seed + id)
    sweep: dict[str, Any] = field(default_factory=dict)  # the swept values that made this job
    # Where each parameter's value came from (one of ORIGINS); shared between jobs alike.
    origins: Mapping[str, str] = field(default_factory=dict)
    defined_at: str = ""  # where its item is defined: "campaign.yaml:12", "shots.csv:40"
    # Its qc block (defaults' with its item's merged over it); in no key: a change re-judges, never re-renders.
    qc: QcThresholds | None = None

    @property
    def seed(self) -> int:
        return self.params.seed

    def cost(self) -> float:
        """Relative render cost, for balancing work: UNet work ~ pixels x frames x steps (x2 with CFG),
        once per chained segment."""
        p = self.params
        guided = 2 if p.max_guidance_scale > 1.0 else 1
        return p.width * p.height * p.num_frames * (p.num_inference_steps * guided + 1) * p.segments


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
    # What the model set where the manifest is silent (num_frames, SVD-XT 1.1's conditioning).
    model_defaults: ModelDefaults | None = None

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
    """Merge defaults into items, expand globs, tables and sweeps, derive seeds and paths; collect every problem."""
    with gc_paused():
        return _resolve(loaded)


def _resolve(loaded: LoadedManifest) -> RunSpec:
    manifest, source = loaded.manifest, loaded.source
    base_dir = loaded.path.parent
    name = manifest.name or loaded.path.stem
    problems: list[Problem] = []
    warnings: dict[Problem, None] = {}  # ordered and unique: sweeps repeat their item's warnings
    images = LocalImages(base_dir)

    output_dir = _output_dir(manifest, name, base_dir, source, problems)
    items, item_problems, fits = gather_items(loaded, images)
    problems += item_problems
    if not fits:  # past max_jobs: nothing is expanded
        raise ManifestError(_in_order(problems, source.file))
    model = _model_defaults(loaded, items, problems)
    fallback = _Fallback(manifest, model)
    jobs: list[Job] = []
    ids = _JobIds()
    # SVD's trained sizes and motion range say nothing about the builtins (random, or trained here).
    trained = manifest.model.source not in BUILTINS
    for item in items:
        if problem := ids.item_problem(item):
            problems.append(problem)
            continue
        qc = fallback.qc_for(item)
        if isinstance(qc, Problem):
            if qc not in problems:  # a glob's or table's entry: once, not once per item it makes
                problems.append(qc)
            continue
        for job in _expand(item, fallback, qc):
            if problem := ids.job_problem(job.id, item.origin, bool(job.sweep)):
                problems.append(problem)
                continue
            if job_problems := _job_problems(job, item, source):
                problems += [p for p in job_problems if p not in problems]  # a default's problem, once
                continue
            jobs.append(job)
            for warning in _job_warnings(job, item, source, trained, model, images):
                warnings[warning] = None
    if problems:
        raise ManifestError(_in_order(problems, source.file))
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
        model_defaults=model,
    )


def _in_order(problems: list[Problem], manifest_file: str) -> list[Problem]:
    """The manifest's problems in file order, then each table's, in the order the tables are named."""
    files: dict[str, int] = {manifest_file: 0}
    for problem in problems:
        files.setdefault(problem.file, len(files))
    return sorted(in_file_order(problems), key=lambda p: files[p.file])


def _model_defaults(loaded: LoadedManifest, items: list[ItemSpec], problems: list[Problem]) -> ModelDefaults:
    """What the model sets; its config is read only when some job leaves num_frames to it."""
    manifest = loaded.manifest
    model = manifest.model
    needed = "num_frames" not in manifest.defaults.model_fields_set and any(
        "num_frames" not in item.entry and "num_frames" not in item.row and "num_frames" not in item.sweep
        for item in items)
    if not needed:
        return fixed_model_defaults(model.source)
    try:
        return model_defaults(model.source, model.revision, loaded.path.parent)
    except ModelConfigUnreadable as exc:
        problems.append(loaded.source.problem(("model", "source"), f"model.source: {model.source}: {exc}"))
        return fixed_model_defaults(model.source)


class _Fallback:
    """Each parameter's value where an item is silent, and where that value comes from:
    the manifest's defaults, else the model's own, else svdflow's."""

    def __init__(self, manifest: Manifest, model: ModelDefaults):
        given = manifest.defaults.model_fields_set
        defaults = manifest.defaults.__dict__
        self.values: dict[str, Any] = {}
        self.origins: dict[str, str] = {}
        for key, parameter in PARAMETERS.items():
            if key in given:
                self.values[key], self.origins[key] = defaults[key], "defaults"
            elif key in model.values:
                self.values[key], self.origins[key] = model.values[key], "model"
            else:
                self.values[key], self.origins[key] = parameter.default, "svdflow"
        self.base_seed: int = self.values["seed"]
        self._shared: dict[tuple, Mapping[str, str]] = {}
        self.qc: QcThresholds | None = manifest.defaults.qc
        self._qc: dict[int, QcThresholds | Problem] = {}  # by the item's own block: a glob's matches share one

    def qc_for(self, item: ItemSpec) -> QcThresholds | Problem | None:
        """The item's qc block merged over defaults' field by field (a field the item sets, null included,
        wins), or the problem of a merge that no clip can pass."""
        own = item.qc
        if own is None or self.qc is None:
            return own or self.qc
        merged = self._qc.get(id(own))
        if merged is None:
            values = {**self.qc.model_dump(), **{name: getattr(own, name) for name in own.model_fields_set}}
            try:
                merged = QcThresholds.model_validate(values)
            except ValidationError as exc:
                reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
                merged = item.origin.entry_problem("qc", f"{item.origin.name}.qc merged over defaults.qc: {reason}")
            self._qc[id(own)] = merged
        return merged

    def origins_for(self, entry: dict, row: dict, combo: dict, derived: bool) -> Mapping[str, str]:
        """One shared mapping per shape of item: 100,000 table rows make a handful of them."""
        key = (tuple(entry), tuple(row), tuple(combo), derived)
        shared = self._shared.get(key)
        if shared is None:
            origins = dict(self.origins)
            origins.update(dict.fromkeys(entry, "item"))
            origins.update(dict.fromkeys(row, "table"))
            origins.update(dict.fromkeys(combo, "sweep"))
            if derived:
                origins["seed"] = "derived"
            # A plain dict, not a read-only proxy: jobs are pickled to other processes (engines).
            shared = self._shared[key] = origins
        return shared


def _output_dir(manifest: Manifest, name: str, base_dir: Path, source: SourceMap, problems: list[Problem]) -> str:
    template = manifest.output.dir
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        unknown = [f for f in fields if f != "name"]
        if unknown:
            problems.append(source.problem(("output", "dir"), f"output.dir: unknown placeholder {{{unknown[0]}}} in "
                                                              f"{template!r}; the only placeholder is {{name}}"))
            return template
        if "name" in fields and not re.fullmatch(ID_PATTERN, name):
            # Same rule as an explicit `name:`: a manifest file named `...yaml` must not write into `..`.
            problems.append(source.problem(("output", "dir"), (
                f"output.dir: {{name}} would be {name!r}, the manifest file's stem, which is not a usable name "
                "(letters, digits, '.', '_', '-', starting with a letter or digit); add `name: NAME` to the "
                "manifest or rename the file")))
            return template
        expanded = template.format(name=name)
    except (ValueError, IndexError) as exc:
        problems.append(source.problem(("output", "dir"), f"output.dir: {template!r} is not a valid template "
                                                          f"({exc}); write braces as {{{{ and }}}}"))
        return template
    if refused := text_refusal(expanded):
        problems.append(source.problem(("output", "dir"), f"output.dir: {refused}"))
        return expanded
    location = Location.parse(expanded, base_dir)
    if not location.is_local:
        return location.text
    resolved = str(Path(location.path).resolve())
    if system_folder(resolved):
        problems.append(source.problem(("output", "dir"), (
            f"output.dir: {expanded!r} is {resolved}, a system folder; svdflow writes only into a folder of its "
            "own: choose a new one, such as renders/{name}")))
    return resolved


# Folders svdflow never writes into: the root and the system's own top folders, and anything under
# those that are not plain storage at all (devices, kernel views, configuration).
_SYSTEM_ROOTS = frozenset({"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
                           "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var",
                           "/Applications", "/Library", "/System", "/Users", "/Volumes", "/private"})
_SYSTEM_TREES = ("/boot/", "/dev/", "/etc/", "/proc/", "/sys/")


def system_folder(path: str) -> bool:
    """Whether a resolved local path is the root, a system top folder, or inside a device/kernel/config tree."""
    return path in _SYSTEM_ROOTS or path.startswith(_SYSTEM_TREES)


def _expand(item: ItemSpec, fallback: _Fallback, qc: QcThresholds | None):
    """The item's jobs, sweeps expanded in parameter order."""
    params = {**fallback.values, **item.entry, **item.row}
    derived = "seed" not in item.entry and "seed" not in item.row
    if derived:
        params["seed"] = derive_seed(fallback.base_seed, item.id)
    defined_at = item.origin.defined_at
    for job_id, combo in _job_ids(item.id, item.sweep):
        seed_origin = "sweep" if "seed" in combo else ("derived" if derived else "item")
        origins = fallback.origins_for(item.entry, item.row, combo, derived and "seed" not in combo)
        yield _job(job_id, item, {**params, **combo}, seed_origin, combo, origins, defined_at, qc)


def _job_ids(item_id: str, swept: dict[str, list]):
    """Yield (job id, the swept values) for one item's jobs."""
    if not swept:
        yield item_id, {}
        return
    keys = [k for k in PARAMETER_NAMES if k in swept]
    for values in itertools.product(*(swept[k] for k in keys)):
        combo = dict(zip(keys, values, strict=True))
        suffix = "-".join(f"{PARAMETERS[k].sweep_label}{_id_value(v)}" for k, v in combo.items())
        yield f"{item_id}-{suffix}", combo


class _JobIds:
    """The item and job ids seen so far, and what is wrong with the next one: reserved, or already
    used. Item ids are unique even when their sweeps would give different job ids: an item's id
    derives its seed and groups its sweep in the report."""

    def __init__(self):
        self.items: dict[str, Origin] = {}
        self.jobs: dict[str, tuple[Origin, bool]] = {}

    def item_problem(self, item: ItemSpec) -> Problem | None:
        first = self.items.setdefault(item.id, item.origin)
        if first is item.origin:
            return None
        return item.origin.duplicate_id(item.id, first)

    def job_problem(self, job_id: str, origin: Origin, swept: bool) -> Problem | None:
        def at(message: str) -> Problem:
            return origin.sweep_problem(message) if swept else origin.problem("id", message)

        if job_id in RESERVED_JOB_IDS:
            return at(f"job id '{job_id}' is reserved (its sidecar would overwrite {job_id}.json); rename the item")
        first = self.jobs.get(job_id)
        if first is None:
            self.jobs[job_id] = (origin, swept)
            return None
        if first == (origin, True) and swept:
            return at(f"the sweep of {origin.name} generates job id '{job_id}' twice; list each value once")
        # Two unswept items with one id never get here: item_problem reports them first.
        by = ("the sweep of " if swept else "") + origin.name
        return at(f"job id '{job_id}' from {by} is already used by {first[0].ref(first[1])}; rename one of the "
                  "items, or change the sweep so the generated ids differ")


def job_id_problems(written: list[tuple[int, Item]], source: SourceMap, limit: int) -> list[Problem]:
    """The id problems among the written items that are valid on their own (`written`: by their index
    in `items:`), for a file whose schema check failed elsewhere: reported with the schema's
    problems, one round of fixes shows them all. (Glob and table entries are expanded once the file
    is valid.)"""
    budget = JobBudget(limit)
    ids, problems = _JobIds(), []
    for index, item in written:
        swept = {k: v for k, v in item.sweep.model_dump().items() if v is not None} if item.sweep else {}
        before = budget.count
        if not budget.take(sweep_jobs(swept)):  # ids are not generated past the limit
            if swept:
                lengths = sweep_lengths(swept)
                problems.append(source.problem(("items", index, "sweep"), budget.over_message(
                    f"items[{index}].sweep", f"this sweep makes {sweep_jobs(swept):,} jobs ({lengths})",
                    "sweep fewer values", before, exact=False)))
            break
        spec = ItemSpec(item.id, item.image, {}, {}, swept, Origin(source, index), False)
        if problem := ids.item_problem(spec):
            problems.append(problem)
            continue
        problems += [p for job_id, combo in _job_ids(item.id, swept)
                     if (p := ids.job_problem(job_id, spec.origin, bool(combo)))]
    return problems


def _job(job_id: str, item: ItemSpec, params: dict[str, Any], seed_origin: str, sweep: dict,
         origins: Mapping[str, str], defined_at: str, qc: QcThresholds | None) -> Job:
    if params["playback_fps"] is None:
        params["playback_fps"] = float(params["fps"] * params["interpolate"])
    if params["loop"] != "crossfade":
        # Only a crossfade uses it: kept, it would enter the output key of files it does not shape
        # (a warning says so where it was set).
        params["loop_frames"] = None
    elif params["loop_frames"] is None:
        params["loop_frames"] = default_loop_frames(rendered_frames(params["num_frames"], params["segments"]))
    # Every value passed the manifest's (or the table's) models already, so this cannot fail; and
    # pydantic-core validates a flat model twice as fast as model_construct builds one in Python.
    return Job(job_id, item.id, item.image, JobParams.model_validate(params), seed_origin, sweep, origins,
               defined_at, qc)


def _id_value(value: Any) -> str:
    if isinstance(value, float):
        return repr(value).replace("-", "n")
    return str(value).replace("-", "n")


def _located(job: Job, item: ItemSpec, source: SourceMap):
    """A problem about one of a job's parameters, where its value was set (item, table row, sweep, defaults)."""
    def at(key: str, message: str) -> Problem:
        origin = job.origins.get(key, "item")
        if origin in ("item", "table"):
            return item.origin.problem(key, message)
        if origin == "sweep":
            return source.problem(("items", item.origin.index, "sweep", key), message)
        return source.problem(("defaults", key), message)

    return at


def _job_problems(job: Job, item: ItemSpec, source: SourceMap) -> list[Problem]:
    """Values each valid alone that do not fit together: a crossfade longer than its clip allows.
    Said once where a default is at fault, once per item where the item (its row, its sweep) is."""
    p = job.params
    if p.loop != "crossfade":
        return []
    at = _located(job, item, source)

    def whose(key: str) -> str:
        return f"item '{job.item_id}': " if job.origins.get(key) in ("item", "table", "sweep") else ""

    frames = rendered_frames(p.num_frames, p.segments)
    made = f"{frames} frame{'s' * (frames != 1)}"
    if p.segments > 1:
        made += f": {p.segments} segments of {p.num_frames}, joined on {p.segments - 1} shared frame" \
                + "s" * (p.segments > 2)
    most = max_loop_frames(frames)
    if most < 1:
        return [at("loop", f"{whose('loop')}loop: crossfade needs a clip of at least 2 frames, not {made}; render "
                           "more frames or use loop: pingpong")]
    if p.loop_frames > most:
        return [at("loop_frames", f"{whose('loop_frames')}loop_frames {p.loop_frames} is more than half of the clip "
                                  f"({made}), and a crossfade blends the clip's last loop_frames frames into "
                                  f"its first ones; use at most {most}, or leave loop_frames unset for a quarter of "
                                  "the clip")]
    return []


def _job_warnings(job: Job, item: ItemSpec, source: SourceMap, trained: bool, model: ModelDefaults,
                  images: LocalImages) -> list[Problem]:
    """Legal but likely unintended settings, reported once per item (sweeps would repeat them)."""
    p, out = job.params, []
    at = _located(job, item, source)

    def warn(key: str, message: str) -> None:
        out.append(at(key, f"item '{job.item_id}': {message}"))

    if trained and (p.width, p.height) not in TRAINED_SIZES:
        warn("width", f"{p.width}x{p.height} is not a size SVD was trained at (1024x576 or 576x1024); "
                      "expect weaker results")
    if trained and p.motion_bucket_id > TRAINED_MAX_MOTION_BUCKET:
        warn("motion_bucket_id", f"motion_bucket_id {p.motion_bucket_id} is above the trained range "
                                 f"0-{TRAINED_MAX_MOTION_BUCKET}; motion may break up")
    if p.min_guidance_scale > p.max_guidance_scale:
        warn("min_guidance_scale", f"min_guidance_scale {p.min_guidance_scale} is above max_guidance_scale "
                                   f"{p.max_guidance_scale}; guidance will fall across frames")
    if p.loop != "crossfade" and job.origins.get("loop_frames") not in ("svdflow", None) and "loop" not in job.sweep:
        warn("loop_frames", f"loop_frames has no effect with loop: {p.loop} (only a crossfade blends frames); "
                            "remove it or set loop: crossfade")
    clip = clip_shape(p)
    held = clip.frames * p.width * p.height * 3
    if held > CLIP_MEMORY_WARNING_BYTES:
        biggest = "interpolate" if p.interpolate > 1 else "segments" if p.segments > 1 else "num_frames"
        warn(biggest, f"its clip is {clip.frames} frames of {p.width}x{p.height}, {held / 2**30:.1f} GiB held in "
                      "memory while it is encoded; lower interpolate, segments or num_frames if that is more than "
                      "this machine has")
    if item.may_be_missing and not images.exists(job.image):
        warn("image", f"image {job.image} does not exist; its jobs will fail until it does")
    for key, kept in model.fixed.items():
        value = getattr(p, key)
        if value != kept:
            # Said once per place and value, not per item: a table column or a default sets many.
            message = (f"{key} {value}: {model.source} was finetuned with fixed conditioning "
                       f"({_listed(model.fixed)}); other values may give worse results (unset, it is {kept})")
            if job.origins.get(key) == "table" and isinstance(item.origin, RowOrigin):
                out.append(item.origin.column_problem(key, message))
            else:
                out.append(at(key, message))
    return out


def _listed(values: dict[str, Any]) -> str:
    return " and ".join(f"{key} {value}" for key, value in values.items())
