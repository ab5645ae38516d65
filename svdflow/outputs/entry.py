"""The record's public format: one `IndexEntry` per job, written whole as the job's sidecar
`<id>.json`, and as one line of `index.jsonl` (`IndexLine`: the entry less what all jobs of its run
share, which is said once, in that run's line of `runs.jsonl`: a `RunInfo`).

People's own tools read these files, so their shape is this module's Pydantic models, published in
`schemas/` (`svdflow schema index|run|sidecar`), and versioned: a run's `svdflow_index` says which
format its lines are, and every older format still loads (`svdflow.outputs.upgrade`) and is written
back in the current one. Nothing else in svdflow parses or builds these files' JSON: it goes through
`svdflow.outputs.index`. `Provenance`, the part of an entry every written file carries inside it, is
published as `schemas/provenance.schema.json`.

Keys. A job has two: the render key hashes what decides its pixels (`RenderMaterial`), the output
key what decides its files from those pixels (`OutputMaterial`); the content key hashes both. When
only the output key changed, the files are encoded again from the job's lossless master. Both
materials follow one rule so that svdflow can grow without re-rendering anyone's campaign: release
0.1's twelve per-job parameters are always in a material, and a parameter added since enters only
where it differs from its default (`keyed_params`). A new parameter that shapes the files rather
than the pixels (a loop, an interpolation) is named in `OUTPUT_PARAMETERS`; an output setting that
applies to some formats only enters while one of them is listed (`OutputMaterial.of`).
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property, lru_cache
from json.encoder import encode_basestring_ascii as _ascii_string
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_serializer

from svdflow.compat import OmitsNewDefaults
from svdflow.hardware import HardwareRecord
from svdflow.manifest.schema import ID_PATTERN, RELEASE_0_1_PARAMETERS, JobParams
from svdflow.quality.record import QualityRecord

# 1: svdflow 0.1 (the first release). 2: render and output keys, masters, provenance in the files.
# 3: JSON Lines (index.jsonl), what a run's jobs share said once per run (runs.jsonl).
INDEX_FORMAT = 3
READABLE_FORMATS = (1, 2, 3)
# An entry's parts that all jobs of a run mostly share: its line in index.jsonl leaves each out while
# it is its run's (runs.jsonl), and says it where it differs (a re-encode keeps its render's).
SHARED_FIELDS = ("model", "hardware", "output", "versions")
PROVENANCE_FORMAT = 1

# Release 0.1's per-job parameters (RELEASE_0_1_PARAMETERS) are always part of a key's material; later
# ones only where they differ from their defaults (see the module docstring).
# Per-job parameters that decide the written files, not the rendered frames: output key, not render key.
# (segments decides the rendered frames: render key.)
OUTPUT_PARAMETERS = ("playback_fps", "loop", "loop_frames", "interpolate")
# The formats whose encoder takes output.crf, and the one that takes output.prores_profile.
CRF_FORMATS = ("mp4", "hevc", "webm")
PRORES_FORMATS = ("prores",)

JobStatus = Literal["done", "failed"]


class Record(BaseModel):
    """A part of an index entry: exact keys, no coercion beyond JSON's own types."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _DropsNone(Record):
    """A record whose unset (None) fields are left out of the JSON rather than written as null."""

    @model_serializer(mode="wrap")
    def _without_none(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class ModelRef(Record):
    """The weights a job was rendered with, as the manifest named them."""

    source: str = Field(description="model.source: a hub id, a local folder or builtin:tiny.")
    revision: str | None = Field(description="model.revision as written in the manifest.")
    variant: str | None = Field(description="model.variant as written in the manifest.")


class OutputSettings(Record):
    """What the job's files were written as: the run's output block."""

    formats: list[str] = Field(description="The formats written, as output.formats listed them.")
    crf: int = Field(description="output.crf: the quality of mp4, hevc and webm.")
    prores_profile: str = Field(description="output.prores_profile: the ProRes flavour of prores.")
    masters: bool = Field(description="output.masters: whether the run kept lossless masters.")


ParamValue = int | float | str | bool | None


def keyed_params(params: BaseModel, *, output: bool) -> dict[str, ParamValue]:
    """A job's parameters as a key's material takes them: those that decide the pixels (or, with
    `output`, the files); release 0.1's always, later ones only where they differ from their default,
    so that adding a parameter never changes an existing job's keys."""
    # Every parameter is a JSON scalar already: the model's own attributes are its dump, without the
    # cost of one (which shows on a 100,000-job plan).
    values = vars(params)
    return {name: values[name] for name, default, always in _keyed_fields(type(params), output, OUTPUT_PARAMETERS)
            if always or values[name] != default}


@lru_cache(maxsize=64)
def _keyed_fields(model: type[BaseModel], output: bool,
                  output_parameters: tuple[str, ...]) -> tuple[tuple[str, Any, bool], ...]:
    """(name, default, always in the key) of the parameters of one side of the keys."""
    return tuple((name, field.default, name in RELEASE_0_1_PARAMETERS) for name, field in model.model_fields.items()
                 if (name in output_parameters) == output)


class RenderMaterial(Record, OmitsNewDefaults):
    """What the render key hashes: everything that decides the job's pixels. Parts added after release
    0.1 (fp8) enter it only when they differ from their defaults (svdflow.compat)."""

    RELEASED_FIELDS = frozenset({"render_version", "input_sha256", "params", "model"})

    render_version: str = Field(description="svdflow's render version (bumped when svdflow's pixels change).")
    input_sha256: str = Field(description="sha256 of the input image's bytes.")
    params: dict[str, ParamValue] = Field(
        description="The parameters that decide the pixels: release 0.1's (less playback_fps), and any later "
                    "one (segments) only where it differs from its default.")
    model: ModelRef = Field(description="The model as the manifest named it.")
    fp8: bool = Field(False, description="hardware.fp8: the UNet's Linear layers ran in FP8 (it changes pixels).")

    @classmethod
    def of(cls, *, render_version: str, input_sha256: str, params: BaseModel, model: ModelRef,
           fp8: bool = False) -> RenderMaterial:
        # Built from validated parts: constructing skips validating them again.
        return cls.model_construct(render_version=render_version, input_sha256=input_sha256,
                                   params=keyed_params(params, output=False), model=model, fp8=fp8)

    @cached_property
    def canonical(self) -> bytes:
        return render_canonical(render_version=self.render_version, input_sha256=self.input_sha256,
                                params_json=_params_json(self.params), model=self.model, fp8=self.fp8)


def render_canonical(*, render_version: str, input_sha256: str, params_json: bytes, model: ModelRef,
                     fp8: bool) -> bytes:
    """canonical_json of a RenderMaterial, from its parts, written out by hand: every part is a JSON
    scalar, a dict of them or ModelRef (tests/test_keys.py holds the two equal). A plan computes it
    for every job without building the material (`svdflow.run.keys.job_keys`), so it is put together
    from its parts in sorted order, the model's (shared by the campaign) encoded once."""
    # Sorted keys: fp8 (a field added after release 0.1: in only when on), input_sha256, model, params,
    # render_version.
    # `params_json`: the params' JSON (`_params_json` of RenderMaterial's dict, or `keyed_params_json`).
    return b"".join((b'{"fp8":true,"input_sha256":' if fp8 else b'{"input_sha256":',
                     _ascii_string(input_sha256).encode(), b',"model":', _model_json(model), b',"params":',
                     params_json, b',"render_version":', _ascii_string(render_version).encode(), b"}"))


def _params_json(params: dict[str, ParamValue]) -> bytes:
    """_dumps(params): each `"name":value` once per campaign (only the seed differs from job to job in
    most campaigns), the object put together from them in sorted order."""
    return b"{" + b",".join([_name_json(name) + str(value).encode() if type(value) is int  # a seed: new each job
                             else _param_json(name, type(value), value)
                             for name, value in sorted(params.items())]) + b"}"


def keyed_params_json(params: BaseModel, *, output: bool) -> bytes:
    """_params_json(keyed_params(params, output=output)), in one pass over the fields in sorted order:
    what a plan computes for each of 100,000 jobs (tests/test_keys.py holds the two equal)."""
    values = vars(params)
    parts = []
    for name, default, always in _sorted_keyed_fields(type(params), output, OUTPUT_PARAMETERS):
        value = values[name]
        if always or value != default:
            parts.append(_name_json(name) + str(value).encode() if type(value) is int
                         else _param_json(name, type(value), value))
    return b"{" + b",".join(parts) + b"}"


@lru_cache(maxsize=64)
def _sorted_keyed_fields(model: type[BaseModel], output: bool,
                         output_parameters: tuple[str, ...]) -> tuple[tuple[str, Any, bool], ...]:
    return tuple(sorted(_keyed_fields(model, output, output_parameters)))


@lru_cache(maxsize=256)
def _name_json(name: str) -> bytes:
    return _dumps(name) + b":"


@lru_cache(maxsize=4096)
def _param_json(name: str, kind: type, value: ParamValue) -> bytes:
    # `kind` in the key: 1, 1.0 and True are one key to a cache, three texts to JSON.
    return _dumps({name: value})[1:-1]


@lru_cache(maxsize=64)
def _model_json(model: ModelRef) -> bytes:
    return _dumps(dict(vars(model)))


class OutputMaterial(_DropsNone):
    """What the output key hashes: everything that decides the files made from the job's pixels."""

    formats: list[str] = Field(description="The formats written, sorted.")
    params: dict[str, ParamValue] = Field(
        description="The per-job parameters that shape the files: playback_fps, and loop, loop_frames and "
                    "interpolate where they differ from their defaults.")
    crf: int | None = Field(None, description="output.crf; only while mp4, hevc or webm is listed.")
    prores_profile: str | None = Field(None, description="output.prores_profile; only while prores is listed.")

    @classmethod
    def of(cls, *, formats: list[str] | tuple[str, ...], params: BaseModel, crf: int,
           prores_profile: str) -> OutputMaterial:
        # The jobs of a campaign mostly share their output material: one instance (and one JSON) each.
        return _output_material(tuple(sorted(formats)), tuple(keyed_params(params, output=True).items()), crf,
                                prores_profile)

    @cached_property
    def canonical(self) -> bytes:
        return canonical_json(self)

    @cached_property
    def digest(self) -> str:
        """The output key (an instance is shared by the jobs alike: hashed once)."""
        return hashlib.sha256(self.canonical).hexdigest()


@lru_cache(maxsize=1024)
def _output_material(formats: tuple[str, ...], params: tuple[tuple[str, ParamValue], ...], crf: int,
                     prores_profile: str) -> OutputMaterial:
    return OutputMaterial.model_construct(
        formats=list(formats), params=dict(params),
        crf=crf if any(f in CRF_FORMATS for f in formats) else None,
        prores_profile=prores_profile if any(f in PRORES_FORMATS for f in formats) else None)


class KeyMaterial(Record):
    """Everything the content key hashes: the render part (render key) and the output part (output key)."""

    render: RenderMaterial = Field(description="What decides the pixels; hashes to render_key.")
    output: OutputMaterial = Field(description="What decides the files made from them; hashes to output_key.")

    def canonical_json(self) -> bytes:
        """The bytes the content key hashes: sorted keys, no spaces, ASCII. The same bytes as
        canonical_json(self), put together from the two halves' (each computed once)."""
        return content_canonical(self.output.canonical, self.render.canonical)

    @cached_property
    def key(self) -> str:
        return hashlib.sha256(self.canonical_json()).hexdigest()

    @cached_property
    def render_key(self) -> str:
        return hashlib.sha256(self.render.canonical).hexdigest()

    @cached_property
    def output_key(self) -> str:
        return self.output.digest


def content_canonical(output: bytes, render: bytes) -> bytes:
    """KeyMaterial's canonical JSON from its two halves' ("output" sorts before "render")."""
    return b'{"output":' + output + b',"render":' + render + b"}"


def canonical_json(model: BaseModel) -> bytes:
    return _dumps(model.model_dump(mode="json"))


def _dumps(value: Any) -> bytes:
    return _CANONICAL(value).encode()


# json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True), as one encoder: dumps
# makes a new one per call, which shows on the two canonical JSONs of each of 100,000 jobs.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode


class InputRecord(Record):
    """The job's input image."""

    uri: str = Field(description="Absolute local path or URL the image was read from.")
    sha256: str | None = Field(description="sha256 of its bytes; null when it could not be read.")
    source_size: tuple[int, int] | None = Field(description="Its width and height before resizing.")


class ModelRecord(ModelRef):
    """The weights, with the commit actually loaded."""

    resolved_revision: str | None = Field(
        description="The hub commit loaded (builtin-tiny-v1 for builtin:tiny); null for a local folder.")


class OutputFile(Record):
    """One written file (or, for frames, folder of PNGs)."""

    format: str = Field(description="mp4, hevc, prores, webm, gif, webp or frames.")
    file: str = Field(description="Its name in the output folder.")
    sha256: str = Field(description="sha256 of its bytes; for frames, over the PNGs in name order.")
    bytes: int = Field(description="Its size; for frames, the PNGs' total.")


class MasterRecord(Record):
    """The job's lossless master: its rendered frames, kept so that output changes re-encode them."""

    file: str = Field(description="Its path in the output folder: .svdflow/masters/<id>.mkv.")
    codec: Literal["ffv1"] = Field(description="ffv1: FFV1 (lossless, planar RGB) in Matroska.")
    sha256: str = Field(description="sha256 of its bytes: a master that differs is not used.")
    bytes: int = Field(description="Its size.")


class SegmentRecord(Record):
    """One clip of a chained job (segments > 1)."""

    index: int = Field(ge=0, description="Its place in the chain: 0 starts from the input image, k from the last "
                                         "frame of clip k-1 (that frame is not repeated in the video).")
    seed: int = Field(description="The seed its noise was drawn with: the job's for clip 0, derived from (the job's "
                                  "seed, index) for the others.")
    render_s: float = Field(description="Seconds it took to denoise and decode.")


class Timings(_DropsNone):
    """Seconds spent on the job, per stage."""

    fetch_s: float | None = Field(None, description="Fetching and decoding the input.")
    input_wait_s: float | None = Field(None, description="How long rendering waited for the input.")
    render_s: float | None = Field(None, description="Denoising and decoding (the first job: loading the model too).")
    decode_s: float | None = Field(None, description="With overlap_decode: what the decode cost the render thread.")
    post_s: float | None = Field(None, description="Looping and interpolating the frames (part of encode_s).")
    encode_s: float | None = Field(None, description="Encoding and writing the files.")
    total_s: float | None = Field(None, description="fetch + render + encode.")


class ErrorRecord(Record):
    """Why a job failed."""

    type: str = Field(description="The error's class, e.g. InputError.")
    message: str = Field(description="What went wrong and what to do.")
    stage: Literal["fetch", "render", "encode"] = Field(description="Where it failed.")


class RunRecord(_DropsNone):
    """The run that rendered the job."""

    name: str = Field(description="The campaign's name.")
    manifest: str = Field(description="Absolute path of the manifest.")
    id: str | None = Field(None, description="The run that recorded it (its line in runs.jsonl); left out in the "
                                             "provenance a file carries and in entries of svdflow before 0.2.")


# Of an entry's fields only `segments` and `quality` have defaults: OmitsNewDefaults leaves them out for a
# single clip and for an entry without scores (a failed job, or one recorded by svdflow 0.2 or earlier).
class IndexEntry(Record, OmitsNewDefaults):
    """One job: enough to render its video again (`svdflow rerender`)."""

    id: str = Field(pattern=ID_PATTERN, description="The job id: the item id, plus a sweep suffix.")
    item_id: str = Field(description="The item it came from.")
    status: JobStatus = Field(description="done, or failed (see error).")
    key: str | None = Field(description="The content key: sha256 of key_material; null when the input could not be read.")
    render_key: str | None = Field(description="sha256 of key_material.render: what decides the pixels.")
    output_key: str | None = Field(description="sha256 of key_material.output: what decides the files from the pixels.")
    key_material: KeyMaterial | None = Field(description="What the keys hash.")
    params: JobParams = Field(description="The job's resolved parameters.")  # type: ignore[valid-type]
    seed: int = Field(description="The seed the noise was drawn with (also in params).")
    seed_origin: Literal["item", "sweep", "derived"] = Field(
        description="item: set on the item; sweep: a swept value; derived: from (defaults.seed, item id).")
    sweep: dict[str, int | float | str] = Field(description="The swept values that made this job.")
    input: InputRecord = Field(description="The input image.")
    model: ModelRecord = Field(description="The weights.")
    hardware: HardwareRecord | None = Field(description="The hardware settings used; null when it never reached the pipeline.")
    outputs: list[OutputFile] = Field(description="The files written.")
    master: MasterRecord | None = Field(description="The lossless master; null when none was kept (masters: false, "
                                                    "svdflow 0.1, a failed job).")
    encoded_from: Literal["render", "master"] = Field(
        description="render: the files were encoded from this job's render; master: re-encoded from its master "
                    "after an output-only change (hardware, versions and frames_sha256 are the render's).")
    frames_sha256: str | None = Field(description="sha256 of the rendered uint8 frames (shape included; before loop "
                                                  "and interpolate): what rerender --verify compares.")
    output: OutputSettings = Field(description="The output settings of the run.")
    timings: Timings = Field(description="Seconds per stage.")
    segments: list[SegmentRecord] = Field(
        default_factory=list,
        description="The chained clips of a job with segments > 1, each with its seed and render time (in "
                    "timings.render_s too); left out for a single clip.")
    quality: QualityRecord | None = Field(None, description=(
        "The quality scores of the frames the files hold, the qc thresholds and verdict, and every re-roll "
        "attempt; left out when not scored (a failed job, an entry from before scores)."))
    versions: dict[str, str] = Field(description="Versions of svdflow and of the libraries that decide pixels.")
    error: ErrorRecord | None = Field(description="Why it failed; null when done.")
    run: RunRecord = Field(description="The run that recorded it.")
    finished_at: str = Field(description="When it was recorded (UTC, ISO 8601).")
    finished_unix: float = Field(description="The same, in seconds since the epoch: a newer record wins a merge.")


class Provenance(Record, OmitsNewDefaults):
    """How one job's files were made, embedded in each of them (video: the container's comment; PNG:
    an iTXt chunk `svdflow`; GIF: a comment; WebP: XMP): its index entry, less what is only known once
    the files are written (the outputs and their hashes, timings, the finishing time). Read by
    `svdflow inspect FILE`; enough for `svdflow rerender FILE`."""

    svdflow_provenance: int = Field(description=f"The provenance format; this svdflow writes {PROVENANCE_FORMAT}.")
    id: str = Field(pattern=ID_PATTERN, description="The job id.")
    item_id: str = Field(description="The item it came from.")
    key: str = Field(description="The content key: sha256 of key_material.")
    render_key: str = Field(description="sha256 of key_material.render: what decides the pixels.")
    output_key: str = Field(description="sha256 of key_material.output: what decides the files.")
    key_material: KeyMaterial = Field(description="What the keys hash.")
    params: JobParams = Field(description="The job's resolved parameters.")  # type: ignore[valid-type]
    seed: int = Field(description="The seed the noise was drawn with (also in params).")
    seed_origin: Literal["item", "sweep", "derived"] = Field(description="Where the seed came from.")
    sweep: dict[str, int | float | str] = Field(description="The swept values that made this job.")
    input: InputRecord = Field(description="The input image.")
    model: ModelRecord = Field(description="The weights.")
    hardware: HardwareRecord | None = Field(description="The hardware settings the frames were rendered with.")
    frames_sha256: str = Field(description="sha256 of the rendered uint8 frames (before loop and interpolate): what "
                                           "rerender --verify compares.")
    output: OutputSettings = Field(description="The output settings the files were written with.")
    versions: dict[str, str] = Field(description="Versions of svdflow and of the libraries that decided the pixels.")
    run: RunRecord = Field(description="The campaign and manifest the job was rendered from.")
    quality: QualityRecord | None = Field(None, description="The frames' quality scores and qc verdict (the entry's "
                                                            "quality); left out where not scored (svdflow 0.2 and "
                                                            "earlier).")

    # Release 0.2's fields are always written; `quality` only when the frames were scored.
    RELEASED_FIELDS = frozenset({"svdflow_provenance", "id", "item_id", "key", "render_key", "output_key",
                                 "key_material", "params", "seed", "seed_origin", "sweep", "input", "model",
                                 "hardware", "frames_sha256", "output", "versions", "run"})

    @classmethod
    def of(cls, entry: IndexEntry) -> Provenance:
        """A done entry's provenance (the same for each of its files)."""
        shared = {name: getattr(entry, name) for name in cls.model_fields if name != "svdflow_provenance"}
        # The files are written before their job is recorded by a run: they name no run id, and a
        # file made again from the record (rerender) must come out the same.
        shared["run"] = entry.run.model_copy(update={"id": None})
        return cls(svdflow_provenance=PROVENANCE_FORMAT, **shared)

    def to_text(self) -> str:
        """The JSON embedded in the files: compact, and the same for the same entry."""
        return self.model_dump_json()


class RunInfo(Record):
    """One run: a line of runs.jsonl. What its jobs' lines in index.jsonl leave out is here."""

    svdflow_index: int = Field(description=f"The record format of the run's lines; this svdflow writes "
                                           f"{INDEX_FORMAT} and reads {', '.join(map(str, READABLE_FORMATS))}.")
    id: str = Field(description="The run's id, as its jobs' lines name it (run_id): its start time and a random part "
                                "(legacy-<hash> for jobs recorded before runs had records).")
    name: str = Field(description="The campaign's name.")
    manifest: str = Field(description="Absolute path of the manifest.")
    started_at: str | None = Field(description="When the run started (UTC, ISO 8601); null for a legacy run.")
    model: ModelRecord = Field(description="The weights its jobs were rendered with.")
    hardware: HardwareRecord | None = Field(description="The hardware settings its jobs were rendered with.")
    output: OutputSettings = Field(description="The output settings of the run.")
    versions: dict[str, str] = Field(description="Versions of svdflow and of the libraries that decide pixels.")

    def to_line(self) -> bytes:
        return self.model_dump_json().encode() + b"\n"


def _line_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, info in IndexEntry.model_fields.items():
        if name == "run":
            fields["run_id"] = (str, Field(description="The run that recorded it: the id of its line in runs.jsonl, "
                                                       "which holds the parts left out here."))
        elif name in SHARED_FIELDS:
            fields[name] = (info.annotation, Field(None, description=f"{info.description} Left out while it is its "
                                                                     "run's (runs.jsonl)."))
        else:
            fields[name] = (info.annotation, info)
    return fields


# Its fields follow IndexEntry's (one place to add a field: IndexEntry), so it is made, not written out.
IndexLine = create_model("IndexLine", __base__=Record, __doc__=(
    "One line of index.jsonl (and of the parts in .svdflow/record/): a job's entry, less the parts it shares "
    "with its run (runs.jsonl, by run_id)."), **_line_fields())


def index_json_schema() -> dict[str, Any]:
    """The JSON Schema of a line of index.jsonl (and of the record's parts), as checked into
    schemas/index.schema.json (formats 1 and 2, one index.json document each, stay beside it:
    schemas/index-1.schema.json and index-2.schema.json)."""
    return _published("index", IndexLine, {"x-svdflow-index-format": INDEX_FORMAT})


def run_json_schema() -> dict[str, Any]:
    """The JSON Schema of a line of runs.jsonl, as checked into schemas/run.schema.json."""
    return _published("run", RunInfo, {"x-svdflow-index-format": INDEX_FORMAT})


def sidecar_json_schema() -> dict[str, Any]:
    """The JSON Schema of a job's sidecar `<id>.json` (a whole entry), as checked into
    schemas/sidecar.schema.json."""
    return _published("sidecar", IndexEntry, {"x-svdflow-index-format": INDEX_FORMAT})


def _published(name: str, model: type[BaseModel], extra: dict[str, Any]) -> dict[str, Any]:
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://svdflow.dev/schemas/{name}.schema.json", **extra,
            **model.model_json_schema(by_alias=True)}


def provenance_json_schema() -> dict[str, Any]:
    """The embedded provenance's JSON Schema, as checked into schemas/provenance.schema.json."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://svdflow.dev/schemas/provenance.schema.json",
        "x-svdflow-provenance-format": PROVENANCE_FORMAT,
        **Provenance.model_json_schema(by_alias=True),
    }
