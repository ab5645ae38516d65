"""The index's public format: one `IndexEntry` per job (also written alone as the job's sidecar
`<id>.json`) and the `IndexDocument` that lists them (`index.json`).

People's own tools read these files, so their shape is this module's Pydantic models, published as
`schemas/index.schema.json` (`svdflow schema index`), and versioned: `svdflow_index` says which
format a document is, and every older format still loads (and is written back in the current one).
Nothing else in svdflow parses or builds these files' JSON: it goes through `svdflow.outputs.index`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from svdflow.compat import OmitsNewDefaults
from svdflow.hardware import HardwareRecord
from svdflow.manifest.schema import ID_PATTERN, JobParams

# 1: svdflow 0.1 (the first release).
INDEX_FORMAT = 1
READABLE_FORMATS = (1,)

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
    """What the job's files were written as."""

    formats: list[str] = Field(description="The formats written, as output.formats listed them.")
    crf: int = Field(description="output.crf: the mp4 quality setting.")


class KeyMaterial(Record, OmitsNewDefaults):
    """Everything the content key hashes: what decides the job's pixels and files. Parts added after
    release 0.1 (and parameters added to params) enter it only when they differ from their defaults."""

    RELEASED_FIELDS = frozenset({"render_version", "input_sha256", "params", "model", "output"})

    render_version: str = Field(description="svdflow's render version (bumped when svdflow's pixels change).")
    input_sha256: str = Field(description="sha256 of the input image's bytes.")
    params: JobParams = Field(description="The job's resolved parameters.")  # type: ignore[valid-type]
    model: ModelRef = Field(description="The model as the manifest named it.")
    output: OutputSettings = Field(description="Formats (sorted) and crf.")
    fp8: bool = Field(False, description="hardware.fp8: the UNet's Linear layers ran in FP8 (it changes pixels).")

    def canonical_json(self) -> bytes:
        """The bytes the content key hashes: sorted keys, no spaces, ASCII."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=True).encode()


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

    format: str = Field(description="mp4, gif, webp or frames.")
    file: str = Field(description="Its name in the output folder.")
    sha256: str = Field(description="sha256 of its bytes; for frames, over the PNGs in name order.")
    bytes: int = Field(description="Its size; for frames, the PNGs' total.")


class Timings(_DropsNone):
    """Seconds spent on the job, per stage."""

    fetch_s: float | None = Field(None, description="Fetching and decoding the input.")
    input_wait_s: float | None = Field(None, description="How long rendering waited for the input.")
    render_s: float | None = Field(None, description="Denoising and decoding (the first job: loading the model too).")
    decode_s: float | None = Field(None, description="With overlap_decode: what the decode cost the render thread.")
    encode_s: float | None = Field(None, description="Encoding and writing the files.")
    total_s: float | None = Field(None, description="fetch + render + encode.")


class ErrorRecord(Record):
    """Why a job failed."""

    type: str = Field(description="The error's class, e.g. InputError.")
    message: str = Field(description="What went wrong and what to do.")
    stage: Literal["fetch", "render", "encode"] = Field(description="Where it failed.")


class RunRecord(Record):
    """The run that rendered the job."""

    name: str = Field(description="The campaign's name.")
    manifest: str = Field(description="Absolute path of the manifest.")


class IndexEntry(Record):
    """One job: enough to render its video again (`svdflow rerender`)."""

    id: str = Field(pattern=ID_PATTERN, description="The job id: the item id, plus a sweep suffix.")
    item_id: str = Field(description="The item it came from.")
    status: JobStatus = Field(description="done, or failed (see error).")
    key: str | None = Field(description="The content key: sha256 of key_material; null when the input could not be read.")
    key_material: KeyMaterial | None = Field(description="What the content key hashes.")
    params: JobParams = Field(description="The job's resolved parameters.")  # type: ignore[valid-type]
    seed: int = Field(description="The seed the noise was drawn with (also in params).")
    seed_origin: Literal["item", "sweep", "derived"] = Field(
        description="item: set on the item; sweep: a swept value; derived: from (defaults.seed, item id).")
    sweep: dict[str, int | float | str] = Field(description="The swept values that made this job.")
    input: InputRecord = Field(description="The input image.")
    model: ModelRecord = Field(description="The weights.")
    hardware: HardwareRecord | None = Field(description="The hardware settings used; null when it never reached the pipeline.")
    outputs: list[OutputFile] = Field(description="The files written.")
    frames_sha256: str | None = Field(description="sha256 of the uint8 frames (shape included): what rerender --verify compares.")
    output: OutputSettings = Field(description="The output settings of the run.")
    timings: Timings = Field(description="Seconds per stage.")
    versions: dict[str, str] = Field(description="Versions of svdflow and of the libraries that decide pixels.")
    error: ErrorRecord | None = Field(description="Why it failed; null when done.")
    run: RunRecord = Field(description="The run that recorded it.")
    finished_at: str = Field(description="When it was recorded (UTC, ISO 8601).")
    finished_unix: float = Field(description="The same, in seconds since the epoch: a newer record wins a merge.")

    def to_json_bytes(self) -> bytes:
        return _pretty(self.model_dump(mode="json", by_alias=True))


class IndexDocument(Record):
    """index.json: every job of an output folder."""

    svdflow_index: int = Field(description="The index format; this svdflow writes "
                                           f"{INDEX_FORMAT} and reads {', '.join(map(str, READABLE_FORMATS))}.")
    name: str | None = Field(None, description="The campaign's name.")
    manifest: str | None = Field(None, description="Absolute path of the manifest of the last run.")
    updated_at: str | None = Field(None, description="When the index was last written (UTC, ISO 8601).")
    jobs: list[IndexEntry] = Field(description="One entry per job, in manifest order (then jobs no longer in it).")

    def to_json_bytes(self) -> bytes:
        return _pretty(self.model_dump(mode="json", by_alias=True))


def _pretty(value: Any) -> bytes:
    return (json.dumps(value, indent=2) + "\n").encode("utf-8")


def index_json_schema() -> dict[str, Any]:
    """The index's JSON Schema, as checked into schemas/index.schema.json."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://svdflow.dev/schemas/index.schema.json",
        "x-svdflow-index-format": INDEX_FORMAT,
        **IndexDocument.model_json_schema(by_alias=True),
    }
