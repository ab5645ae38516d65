"""Per-job defaults that follow the model: its own `num_frames`, SVD-XT 1.1's fixed conditioning, and
builtin:toy's guidance.

Read from plain JSON (a local folder's or the hub cache's `unet/config.json`) or from known values,
never by loading weights or importing torch, and never by downloading: validation stays fast and
offline.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from svdflow.models.source import (
    BUILTIN_TINY,
    BUILTIN_TOY,
    BUILTINS,
    describe_source,
    hub_cache_dir,
    resolve_local,
)
from svdflow.models.tiny_config import TINY_UNET_CONFIG
from svdflow.models.toy_config import TOY_DEFAULTS, TOY_UNET_CONFIG

SVD = "stabilityai/stable-video-diffusion-img2vid"
SVD_XT = "stabilityai/stable-video-diffusion-img2vid-xt"
SVD_XT_1_1 = "stabilityai/stable-video-diffusion-img2vid-xt-1-1"

# The models' unet/config.json num_frames, known without reading it (SVD-XT 1.1 is gated: its
# config is not readable without accepting the licence).
_KNOWN_NUM_FRAMES = {SVD: 14, SVD_XT: 25, SVD_XT_1_1: 25}
_BUILTIN_NUM_FRAMES = {BUILTIN_TINY: TINY_UNET_CONFIG["num_frames"], BUILTIN_TOY: TOY_UNET_CONFIG["num_frames"]}
# SVD-XT 1.1's model card: "finetuned with fixed conditioning at 6FPS and Motion Bucket Id 127".
_FIXED_CONDITIONING = {SVD_XT_1_1: {"fps": 6, "motion_bucket_id": 127}}


class ModelConfigUnreadable(Exception):
    """The model's own num_frames is needed but its unet/config.json cannot be read offline."""


@dataclass(frozen=True)
class ModelDefaults:
    """What a model says about per-job parameters that the manifest leaves unset."""

    source: str
    values: dict[str, Any] = field(default_factory=dict)  # parameter -> the model's own value
    # Values the model was finetuned with and should be kept: departing from them warns.
    fixed: dict[str, Any] = field(default_factory=dict)
    basis: str = ""  # where the values were read, after "<source>'s" in the plan: "unet/config.json"


def fixed_model_defaults(source: str) -> ModelDefaults:
    """The defaults known from the source's name alone (no file read): SVD-XT 1.1's conditioning,
    builtin:toy's guidance."""
    fixed = _FIXED_CONDITIONING.get(source, {})
    if fixed:
        return ModelDefaults(source, dict(fixed), dict(fixed), "model card")
    if source == BUILTIN_TOY:
        return ModelDefaults(source, dict(TOY_DEFAULTS), {}, "config")
    return ModelDefaults(source, {}, {}, "")


def model_defaults(source: str, revision: str | None, manifest_dir: str | os.PathLike) -> ModelDefaults:
    """Every default the model sets, num_frames included; raises ModelConfigUnreadable with the fix."""
    known = fixed_model_defaults(source)
    if source in _KNOWN_NUM_FRAMES:
        return ModelDefaults(source, {**known.values, "num_frames": _KNOWN_NUM_FRAMES[source]}, known.fixed,
                             "model card")
    kind = describe_source(source, manifest_dir)
    if kind == "builtin":
        if source not in BUILTINS:
            raise ModelConfigUnreadable(f"no such builtin model; the builtins are {' and '.join(BUILTINS)}")
        return ModelDefaults(source, {**known.values, "num_frames": _BUILTIN_NUM_FRAMES[source]}, {},
                             known.basis or "unet config")
    if kind == "local":
        folder = resolve_local(source, manifest_dir)
        config = folder / "unet" / "config.json"
        if not config.is_file():
            raise ModelConfigUnreadable(
                f"{source.rstrip('/')}/unet/config.json does not exist, so the model's own num_frames is unknown; "
                "point model.source at a diffusers pipeline folder (with unet/config.json), or set num_frames "
                "in defaults")
        return ModelDefaults(source, {"num_frames": _num_frames(config, f"{source.rstrip('/')}/unet/config.json")},
                             {}, "unet/config.json")
    path = _hub_cached_config(source, revision)
    return ModelDefaults(source, {"num_frames": _num_frames(path, "its unet/config.json")}, {},
                         "unet/config.json (in the Hugging Face cache)")


def _hub_cached_config(source: str, revision: str | None) -> str:
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        found = try_to_load_from_cache(source, "unet/config.json", cache_dir=hub_cache_dir(), revision=revision)
    except HFValidationError:
        raise ModelConfigUnreadable(
            "is neither an existing folder nor a valid hub id (org/name); write a local folder as a path "
            "(./models/svd), or fix the id") from None
    if isinstance(found, str):
        return found
    at = f" at revision {revision}" if revision else ""
    flag = f" --revision {revision}" if revision else ""
    raise ModelConfigUnreadable(
        f"the model's own num_frames comes from its unet/config.json, which is not in the Hugging Face "
        f"cache{at} (validation never downloads); set num_frames in defaults, or fetch the config with "
        f"`hf download {source} unet/config.json{flag}`")


def _num_frames(path: str | os.PathLike, shown: str) -> int:
    try:
        with open(path, encoding="utf-8") as file:
            config = json.load(file)
    except (OSError, ValueError) as exc:
        raise ModelConfigUnreadable(f"{shown} cannot be read ({exc}); download or copy it again, or set "
                                    "num_frames in defaults") from None
    value = config.get("num_frames") if isinstance(config, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ModelConfigUnreadable(f"{shown} has no num_frames (a positive integer); set num_frames in defaults")
    return value
