"""Pydantic models of the manifest: the user interface, names as in DESIGN.md.

Per-job parameters are declared once, in `PARAMETERS`, and the three places that take them
(`defaults`, an item's own overrides, an item's `sweep`) are generated from that table, so a new
parameter cannot be added to one place and forgotten in another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    create_model,
    field_validator,
    model_validator,
)

from svdflow.compat import OmitsNewDefaults
from svdflow.hardware import PROFILE_SETTINGS, manifest_fp8_conflict, manifest_overlap_conflict
from svdflow.manifest.limits import DEFAULT_MAX_JOBS
from svdflow.outputs.codecs import PRORES_PROFILES
from svdflow.quality.thresholds import QcThresholds

FORMAT_VERSION = 1
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
# A job called "index" would write its sidecar index.json over the run's index.
RESERVED_JOB_IDS = frozenset({"index"})
# The sizes SVD and SVD-XT were trained at; others work but look worse, so they only warn.
TRAINED_SIZES = ((1024, 576), (576, 1024))
# SVD's motion buckets were trained up to 255; higher values extrapolate.
TRAINED_MAX_MOTION_BUCKET = 255
MAX_SEED = 2**63 - 1
MAX_FRAMES = 1024
# Chained clips and interpolated frames multiply a job's frames (and memory, when encoding): bounded.
MAX_SEGMENTS = 64
MAX_INTERPOLATE = 16


class StrictModel(BaseModel):
    """Unknown keys are errors and types are not coerced: "7" is not a number, `yes` is not a string."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _multiple_of_8(value: int) -> int:
    if value % 8:
        lower, upper = value - value % 8, value - value % 8 + 8
        raise ValueError(f"{value} is not a multiple of 8 (the VAE downsamples by 8); use {lower} or {upper}")
    return value


@dataclass(frozen=True)
class Parameter:
    """One per-job parameter: its type, default and the hover text editors show."""

    annotation: Any
    default: Any
    description: str
    sweep_label: str  # prefix of the value in generated sweep ids: city-m60
    # Where the default follows the model (models/defaults.py): what defaults' hover text
    # says about it. The schema then shows no fixed default.
    follows_model: str = ""


Size = Annotated[int, Field(ge=64, le=4096, json_schema_extra={"multipleOf": 8}), AfterValidator(_multiple_of_8)]
PARAMETERS: dict[str, Parameter] = {
    "num_frames": Parameter(
        Annotated[int, Field(ge=1, le=MAX_FRAMES)], 25,
        "Frames to generate. SVD was trained on 14, SVD-XT on 25.", "f",
        follows_model="Unset: the model's own (SVD 14, SVD-XT 25, other models their unet/config.json's)."),
    "num_inference_steps": Parameter(
        Annotated[int, Field(ge=1, le=1000)], 25,
        "Denoising steps; more is slower and usually cleaner.", "steps"),
    "fps": Parameter(
        Annotated[int, Field(ge=1, le=240)], 7,
        "Conditioning frame rate, as diffusers takes it (the model is conditioned on fps-1).", "fps",
        follows_model="Unset: 7, or 6 for SVD-XT 1.1 (finetuned at 6 only)."),
    "playback_fps": Parameter(
        Annotated[float, Field(gt=0, le=240)] | None, None,
        "Frame rate of the written files; null: the same as fps (times interpolate).", "pfps"),
    "motion_bucket_id": Parameter(
        Annotated[int, Field(ge=0, le=1023)], 127,
        "Amount of motion; SVD was trained on 0-255 (higher values warn).", "m",
        follows_model="Unset: 127 (SVD-XT 1.1 was finetuned at 127 only)."),
    "noise_aug_strength": Parameter(
        Annotated[float, Field(ge=0, le=10)], 0.02,
        "Noise added to the conditioning image; more noise, less resemblance, more motion.", "aug"),
    "min_guidance_scale": Parameter(
        Annotated[float, Field(ge=0, le=100)], 1.0,
        "Classifier-free guidance at the first frame (guidance ramps linearly across frames).", "gmin"),
    "max_guidance_scale": Parameter(
        Annotated[float, Field(ge=0, le=100)], 3.0,
        "Classifier-free guidance at the last frame; at or below 1.0 with min, CFG is skipped.", "gmax"),
    "width": Parameter(
        Size, 1024, "Output width in pixels, a multiple of 8 (trained: 1024).", "w"),
    "height": Parameter(
        Size, 576, "Output height in pixels, a multiple of 8 (trained: 576).", "h"),
    "resize": Parameter(
        Literal["crop", "stretch", "pad"], "crop",
        "How the input image is fitted to width x height: center-crop, stretch, or pad with black.", "r"),
    "seed": Parameter(
        Annotated[int, Field(ge=0, le=MAX_SEED)], 42,
        "Random seed. In defaults: the base seed from which an item without its own seed derives one "
        "from (seed, item id); on an item: that item's exact seed.", "s"),
    # The draft tier: lossy, off by default. Each trades fidelity for UNet work; both are in the key,
    # so a draft and a final of one item coexist.
    "cfg_until": Parameter(
        Annotated[float, Field(ge=0, le=1)], 1.0,
        "Draft tier (lossy): the fraction of the denoising steps that use classifier-free guidance; the "
        "steps after it run the conditional branch alone, one UNet batch instead of two. 1.0: every step "
        "(as trained); 0.5: the first half.", "cfg"),
    "cache_interval": Parameter(
        Annotated[int, Field(ge=1, le=100)], 1,
        "Draft tier (lossy): DeepCache. Of every N steps, one runs the whole UNet and N-1 run only its "
        "outermost blocks, reusing the deep features of the last full step. 1: off (every step full).", "ci"),
    # Longer, looping, smoother clips. Applied in this order: segments (rendered), then loop, then
    # interpolate (both made from the rendered frames, so a change re-encodes from the master), then encode.
    "segments": Parameter(
        Annotated[int, Field(ge=1, le=MAX_SEGMENTS)], 1,
        "Clips to render and chain: each one after the first is conditioned on the previous clip's last frame "
        "and seeded from (seed, its number); they are joined without repeating the shared frame, "
        "segments x num_frames - (segments - 1) frames in all.", "seg"),
    "loop": Parameter(
        Literal["none", "pingpong", "crossfade"], "none",
        "Make the clip loop without a jump: none; pingpong (the frames again, reversed, without repeating "
        "either end); crossfade (the last loop_frames frames blended into the first ones; loop_frames fewer "
        "frames). Applied after segments, before interpolate.", "loop"),
    "loop_frames": Parameter(
        Annotated[int, Field(ge=1, le=MAX_FRAMES)] | None, None,
        "With loop: crossfade, how many frames the end is blended into the start over, at most half the "
        "clip; null: a quarter of the clip (at least 1).", "lf"),
    "interpolate": Parameter(
        Annotated[int, Field(ge=1, le=MAX_INTERPOLATE)], 1,
        "Smoother playback: N-1 motion-interpolated frames (ffmpeg's minterpolate, no extra weights) between "
        "each pair of frames, and the written frame rate multiplied by N unless playback_fps is set. 1: off.",
        "x"),
}
# Release 0.1's parameters. Those added since enter content keys and index entries only when they
# differ from their defaults (svdflow.compat), so existing jobs keep their keys.
RELEASE_0_1_PARAMETERS = ("num_frames", "num_inference_steps", "fps", "playback_fps", "motion_bucket_id",
                          "noise_aug_strength", "min_guidance_scale", "max_guidance_scale", "width", "height",
                          "resize", "seed")


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def _params_model(name: str, doc: str, *, optional: bool) -> type[StrictModel]:
    fields = {}
    for key, p in PARAMETERS.items():
        if optional:
            fields[key] = (p.annotation | None, Field(None, description=p.description + " Overrides defaults."))
        else:
            # json_schema_extra only where needed: given (even None), it hides the annotation's (width's multipleOf).
            fields[key] = (p.annotation, Field(p.default, description=f"{p.description} {p.follows_model}".strip(),
                                               **({"json_schema_extra": _no_default} if p.follows_model else {})))
    return create_model(name, __base__=StrictModel, __doc__=doc, **fields)


class _DefaultQc(StrictModel):
    qc: QcThresholds | None = Field(None, description=(
        "Quality control of every job: thresholds on its quality scores (unset: not checked) and how many "
        "times a job that fails them renders again with the next seed of its re-roll sequence. Not part of "
        "any key: changing it re-judges recorded scores, it never renders again on its own."))


class _ItemQc(StrictModel):
    qc: QcThresholds | None = Field(None, description=(
        "Quality control of this item's jobs; merged over defaults' qc field by field (a field set here, "
        "null included, replaces the default's)."))


Defaults = create_model("Defaults", __base__=(_DefaultQc, _params_model("_DefaultParams", "", optional=False)),
                        __doc__="Per-job parameters applied wherever an item is silent.")


class _ResolvedParams(StrictModel, OmitsNewDefaults):
    RELEASED_FIELDS = frozenset(RELEASE_0_1_PARAMETERS)


def _resolved_params_model() -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for key, p in PARAMETERS.items():
        annotation = p.annotation
        if key == "playback_fps":  # resolved: never null
            annotation = Annotated[float, Field(gt=0, le=240)]
        fields[key] = (annotation, Field(p.default, description=p.description))
    return create_model("JobParams", __base__=_ResolvedParams, __doc__="A job's parameters, every one resolved.",
                        **fields)


# A job's parameters, resolved (defaults, item, sweep): what the pipeline is called with and what
# the index records. Built with model_construct by resolution (the manifest was validated already).
JobParams = _resolved_params_model()

_SWEEP_FIELDS = {
    key: (
        list[p.annotation] | None,
        # Repeated values would make one job id twice (refused); uniqueItems lets the schema say so.
        Field(None, min_length=1, max_length=256, json_schema_extra={"uniqueItems": True},
              description=f"Values of {key} to render, one job each; each value once. {p.description}"),
    )
    for key, p in PARAMETERS.items()
}
Sweep = create_model(
    "Sweep", __base__=StrictModel,
    __doc__="Parameters to vary: one job per combination (cartesian product, in key order).",
    **_SWEEP_FIELDS,
)


_IMAGE_DESCRIPTION = ("Input image: a local path (relative to the {base}) or an fsspec URL "
                      "(file://, http(s)://, memory://, s3://, gs://, hf://).")
_Id = Annotated[str, Field(
    pattern=ID_PATTERN, max_length=128,
    description="Unique name of the item; names its outputs. Letters, digits, '.', '_', '-'; "
                "starts with a letter or digit.")]


class _Written(StrictModel):
    id: _Id
    image: str = Field(min_length=1, description=_IMAGE_DESCRIPTION.format(base="manifest's folder"))


class _Swept(StrictModel):
    sweep: Sweep | None = Field(  # type: ignore[valid-type]
        None, description="Expand this item into one job per combination of the listed values.")


# Bounds a glob entry's list of patterns; a campaign lists folders, not files.
MAX_GLOB_PATTERNS = 256
_Pattern = Annotated[str, Field(min_length=1)]


class _Globbed(StrictModel):
    glob: _Pattern | Annotated[list[_Pattern], Field(min_length=1, max_length=MAX_GLOB_PATTERNS)] = Field(
        description="One item per file matching this pattern (or these patterns), in sorted order: a local "
                    "pattern (relative to the manifest's folder) or an fsspec URL whose filesystem can list "
                    "(file://, memory://, s3://, gs://, hf://, chained URLs). ** matches any depth; hidden "
                    "files are skipped. Each item's id is the match's path below the pattern's fixed "
                    "folders, without its extension, other characters than letters, digits, '.', '_' and "
                    "'-' turned into '-' (products/red shoe.JPG -> products-red-shoe). Every other key of "
                    "the entry applies to each item.")
    id_prefix: str | None = Field(
        None, pattern=ID_PATTERN, max_length=64,
        description="Put before every generated id (p- makes p-products-red-shoe).")

    @field_validator("glob", mode="before")
    @classmethod
    def _patterns(cls, value: Any) -> Any:
        # Checked here in one go: a str | list union would report each member's failure separately.
        patterns = [value] if isinstance(value, str) else value
        if not isinstance(patterns, list):
            raise ValueError(f"expected a pattern or a list of patterns, got {_kind(value)}; write e.g. "
                             "images/*.png or [images/*.png, more/*.jpg]")
        if not patterns:
            raise ValueError("the list is empty; list at least one pattern, or remove the entry")
        if len(patterns) > MAX_GLOB_PATTERNS:
            raise ValueError(f"too many patterns ({len(patterns)}); list at most {MAX_GLOB_PATTERNS}")
        for pattern in patterns:
            if not isinstance(pattern, str):
                raise ValueError(f"every pattern is a string, got {_kind(pattern)}; quote it")
            if not pattern:
                raise ValueError("a pattern is empty; give a pattern such as images/*.png")
        return patterns


class _Tabled(StrictModel):
    table: str = Field(
        min_length=1,
        description="One item per row of this table: a CSV file with a header row (.csv) or JSON Lines "
                    "(.jsonl), local (relative to the manifest's folder) or an fsspec URL. Columns: id, "
                    "image (relative to the table's folder, or a URL) and any per-item parameter; an empty "
                    "cell means not set. Every other key of the entry applies to each row that does not "
                    "set it.")


class _Row(StrictModel):
    id: _Id
    image: str = Field(min_length=1, description=_IMAGE_DESCRIPTION.format(base="table's folder"))


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", dict: "a mapping",
            list: "a list", type(None): "null"}.get(type(value), type(value).__name__)


_ItemParams = _params_model("_ItemParams", "", optional=True)
Item = create_model(
    "Item", __base__=(_ItemQc, _Written, _Swept, _ItemParams),
    __doc__="One input image and how to animate it.",
)
GlobItem = create_model(
    "GlobItem", __base__=(_ItemQc, _Globbed, _Swept, _ItemParams),
    __doc__="Many items: one per file a glob pattern matches, with the same parameters.",
)
TableItem = create_model(
    "TableItem", __base__=(_ItemQc, _Tabled, _Swept, _ItemParams),
    __doc__="Many items: one per row of a CSV or JSON Lines table.",
)
# A table row, validated like a written item (same fields, same messages) but without sweeps.
TableRow = create_model(
    "TableRow", __base__=(_Row, _ItemParams),
    __doc__="One row of an items table: one item.",
)

# Which form an entry of `items:` is, by the key that names its input(s). Tags are not keys, so
# loader.py can tell them apart in error locations and drop them.
ITEM_FORMS: dict[str, type[StrictModel]] = {"image-item": Item, "glob-item": GlobItem, "table-item": TableItem}
INPUT_KEYS = ("image", "glob", "table")


def _item_form(value: Any) -> str:
    if isinstance(value, dict):
        # With none of the input keys (or image beside another), the plain item's errors say what to add.
        if "image" not in value:
            if "glob" in value:
                return "glob-item"
            if "table" in value:
                return "table-item"
        return "image-item"
    return next((tag for tag, model in ITEM_FORMS.items() if isinstance(value, model)), "image-item")


ItemEntry = Annotated[
    Annotated[Item, Tag("image-item")] | Annotated[GlobItem, Tag("glob-item")]  # type: ignore[valid-type]
    | Annotated[TableItem, Tag("table-item")],  # type: ignore[valid-type]
    Discriminator(_item_form),
]


class ModelSource(StrictModel):
    """Which weights to load."""

    source: str = Field(
        "stabilityai/stable-video-diffusion-img2vid-xt", min_length=1,
        description="A Hugging Face hub id (org/name), a local folder saved with save_pretrained, "
                    "builtin:tiny (small random weights for tests and dry runs) or builtin:toy (a small "
                    "model trained on synthetic camera pans, for demos: it moves).")
    revision: str | None = Field(None, description="Hub branch, tag or commit; null: the default branch.")
    variant: str | None = Field(
        None, description="Weight files variant, e.g. fp16 (loads *.fp16.safetensors); null: the plain files.")


def _needs_resident_models(schema: dict[str, Any]) -> None:
    # manifest_overlap_conflict and manifest_fp8_conflict, as far as the file decides them: with
    # overlap_decode or fp8 on, offload is none, or unset under a profile that offloads nothing.
    offloading = sorted(name for name, settings in PROFILE_SETTINGS.items() if settings["offload"] != "none")
    resident = {"anyOf": [{"required": ["offload"], "properties": {"offload": {"const": "none"}}},
                          {"not": {"required": ["offload"]}, "properties": {"profile": {"not": {"enum": offloading}}}}]}
    schema["allOf"] = [{"if": {"required": [flag], "properties": {flag: {"const": True}}}, "then": resident}
                       for flag in ("overlap_decode", "fp8")]


class Hardware(StrictModel):
    """One hardware profile for the whole run. Fields set here override what the profile picks."""

    model_config = ConfigDict(json_schema_extra=_needs_resident_models)

    profile: Literal["auto", "max-speed", "balanced", "low-vram", "cpu"] = Field(
        "auto", description="auto picks from the device and its free memory; max-speed: resident and "
                            "compiled; balanced: resident, eager; low-vram: offloaded, chunked; cpu.")
    device: str = Field(
        "auto", pattern=r"^(auto|cpu|mps|cuda(:[0-9]+)?)$",
        description="auto | cpu | cuda | cuda:N | mps. Under a multi-process launcher, auto is cuda:LOCAL_RANK.")
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        "auto", description="Weights and activations dtype; auto: float16 on CUDA, float32 on CPU.")
    offload: Literal["none", "model", "group", "sequential"] = Field(
        "none", description="Keep weights off the GPU between uses: model (whole models), group "
                            "(UNet blocks streamed), sequential (every layer; slowest, least memory).")
    forward_chunking: bool = Field(
        False, description="Run the UNet's feed-forward layers in chunks: less memory, a little slower.")
    decode_chunk_size: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Frames decoded by the VAE at once; null: all frames at once.")
    compile: Literal["auto", "on", "off"] = Field(
        "auto", description="torch.compile the UNet's repeated blocks (and, on CUDA, the VAE decoder); auto: only "
                            "when the planned work is long enough to win.")
    overlap_decode: bool = Field(
        False, description="Decode each video with the VAE on a second CUDA stream while the next job denoises; "
                           "needs offload: none. Same frames; more memory at once.")
    fp8: bool = Field(
        False, description="Run the UNet's transformer Linear layers as FP8 matmuls with dynamic per-row scales "
                           "(near-lossless, faster on the tensor cores): NVIDIA GPUs of compute capability 8.9 or "
                           "newer only, offload: none. Changes pixels, so it is part of every job's content key.")

    @model_validator(mode="after")
    def _resident_models(self) -> Hardware:
        if conflict := manifest_overlap_conflict(self) or manifest_fp8_conflict(self):
            raise ValueError(conflict)
        return self


OUTPUT_FORMATS = ("mp4", "hevc", "prores", "webm", "gif", "webp", "frames")


class Output(StrictModel):
    """Where and how videos are written."""

    dir: str = Field(
        "renders/{name}", min_length=1,
        # For editors only (svdflow's own check says what is wrong): text, {{ and }}, and {name} (with a
        # conversion or format spec, as str.format takes them) as the one placeholder.
        json_schema_extra={"pattern": r"^(?:[^{}]|\{\{|\}\}|\{name(?:![rsa])?(?::[^{}]*)?\})*$"},
        description="Output folder, relative to the manifest's folder, or an fsspec URL; {name} is the manifest's name.")
    formats: list[Literal[OUTPUT_FORMATS]] = Field(  # type: ignore[valid-type]
        ["mp4"], min_length=1, json_schema_extra={"uniqueItems": True},
        description="Files to write per job: mp4 (H.264), hevc (H.265 in .hevc.mp4, tagged hvc1 for Apple "
                    "players), prores (.mov, ProRes 422 HQ 10-bit 4:2:2 by default, for editors), webm (VP9), "
                    "gif, webp, frames (a folder of PNGs).")
    crf: int = Field(
        18, ge=0, le=51,
        description="Quality of mp4 (x264), hevc (x265) and webm (VP9, whose scale runs to 63): 0 best (x264, x265: "
                    "lossless), 18 visually lossless, 51 worst. Changing it re-encodes from the masters.")
    prores_profile: Literal[tuple(PRORES_PROFILES)] = Field(  # type: ignore[valid-type]
        "hq",
        description="ProRes flavour of prores: proxy, lt, standard, hq (422 HQ, the default), 4444 or 4444xq "
                    "(4:4:4); 10-bit.")
    masters: bool = Field(
        True,
        description="Keep each job's frames losslessly (FFV1) in <dir>/.svdflow/masters, so that a change of "
                    "formats, crf, playback_fps or prores_profile re-encodes them instead of rendering again.")

    @field_validator("formats")
    @classmethod
    def _no_repeats(cls, formats: list[str]) -> list[str]:
        repeated = sorted({f for f in formats if formats.count(f) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} listed more than once; list each format once")
        return formats


class Manifest(StrictModel):
    """A render campaign: inputs, per-item micro-conditioning and one hardware profile."""

    svdflow: Literal[1] = Field(description="Manifest format version; this svdflow reads 1.")
    name: str | None = Field(
        None, pattern=ID_PATTERN, max_length=128,
        description="Campaign name, used in output.dir's {name}; default: the manifest file's stem.")
    max_jobs: int = Field(
        DEFAULT_MAX_JOBS, ge=1,
        description=f"The most jobs this manifest may expand to (items x sweeps, glob matches, table rows), "
                    f"counted before they are made: past it the manifest is invalid, so that a few lines of "
                    f"YAML (three sweeps of 256 values: 16.7 million jobs) cannot take a machine down. Default "
                    f"{DEFAULT_MAX_JOBS:,}; raise it for a campaign that really is bigger.")
    model: ModelSource = Field(default_factory=ModelSource, description="Which weights to load.")
    hardware: Hardware = Field(default_factory=Hardware, description="How the one pipeline runs.")
    output: Output = Field(default_factory=Output, description="Where and how videos are written.")
    defaults: Defaults = Field(  # type: ignore[valid-type]
        default_factory=Defaults, description="Per-job parameters applied wherever an item is silent.")
    items: list[ItemEntry] = Field(  # type: ignore[valid-type]
        min_length=1,
        description="The inputs to render: items written out (id and image), or entries that make many "
                    "items (glob: matching files, table: rows). Each item is one job, or several with sweep.")


def _cross_field_rules(defs: dict[str, Any]) -> None:
    """Rules between fields of one mapping that svdflow checks after validation, said in the schema too
    so that editors show them (the Pydantic models cannot carry them into their schema)."""
    # An item's id is its job id unless a sweep suffixes it: a reserved id needs a sweep.
    defs["Item"]["if"] = {"required": ["id"], "properties": {"id": {"enum": sorted(RESERVED_JOB_IDS)}}}
    defs["Item"]["then"] = {"required": ["sweep"], "properties": {"sweep": {"type": "object", "minProperties": 1}}}
    # A one-frame clip stays one frame whatever the segments: nothing to crossfade. Said where both are set
    # on the item that makes the jobs and no sweep replaces either; defaults may be replaced by every
    # item, and a table's by its rows: there only svdflow sees it.
    swept = {"required": ["sweep"], "properties": {"sweep": {"anyOf": [
        {"required": [key], "properties": {key: {"type": "array"}}} for key in ("loop", "num_frames")]}}}
    for name in ("Item", "GlobItem"):
        defs[name]["not"] = {"required": ["loop", "num_frames"],
                             "properties": {"loop": {"const": "crossfade"}, "num_frames": {"const": 1}},
                             "not": swept}


def json_schema() -> dict[str, Any]:
    """The manifest's JSON Schema, as checked into schemas/manifest.schema.json."""
    schema = Manifest.model_json_schema()
    _cross_field_rules(schema["$defs"])
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://svdflow.dev/schemas/manifest.schema.json",
        "x-svdflow-format-version": FORMAT_VERSION,
        **schema,
    }
