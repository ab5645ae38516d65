"""What kind of source a manifest's `model.source` names (builtin, local folder, hub id), where a
builtin's files are, and where the Hugging Face cache is, without torch: validation asks these too,
and must stay fast.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import constants as hf_constants

BUILTIN_TINY = "builtin:tiny"
BUILTIN_TOY = "builtin:toy"
BUILTINS = (BUILTIN_TINY, BUILTIN_TOY)

# builtin:toy's trained pipeline folder (package data), loaded like any local model folder.
TOY_FOLDER = Path(__file__).resolve().parent / "toy"

_PATH_PREFIXES = ("./", "../", "/", "~", ".\\", "..\\")


def describe_source(source: str, manifest_dir: str | os.PathLike | None = None) -> str:
    """How `source` will be loaded: "builtin", "local" or "hub".

    A source is a local folder when it is written as a path (./, ../, /, ~) or when a folder of that
    name exists (relative ones next to the manifest); anything else is a hub id. This is the rule
    diffusers applies too, so a bare `models/svd` folder is found just as it would be there.
    """
    if source.startswith("builtin:"):
        return "builtin"
    if source.startswith(_PATH_PREFIXES) or source in (".", "..") or os.path.isabs(source):
        return "local"
    if resolve_local(source, manifest_dir).is_dir():
        return "local"
    return "hub"


def resolve_local(source: str, manifest_dir: str | os.PathLike | None) -> Path:
    """A local source's folder: relative ones are read from the manifest's folder (else the cwd)."""
    path = Path(os.path.expanduser(source))
    if not path.is_absolute():
        path = Path(manifest_dir if manifest_dir is not None else os.getcwd()) / path
    return path


def offline_variable() -> str | None:
    """The name of the variable that puts the hub in offline mode, when one does."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return name
    if hf_constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE"
    return None


def hub_cache_dir() -> str | None:
    """The hub cache folder set in the environment now, or None for huggingface_hub's default.

    huggingface_hub fixes its cache folder (and HF_HUB_OFFLINE) when it is imported; reading the
    variables here makes a value set later (by a test, a notebook, a wrapper script) count.
    """
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None
