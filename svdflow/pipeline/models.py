"""Loading the pipeline a manifest's `model:` section names: builtin:tiny or builtin:toy, a local
folder, or a hub id.

Local folders, hub ids and builtin:toy (a trained pipeline folder shipped as package data) go through
the very same `StableVideoDiffusionPipeline.from_pretrained` call (safetensors only, never remote
code), so a folder made with `save_pretrained` or `hf download --local-dir` behaves exactly like the
hub model it came from. builtin:tiny is built from code. Every failure becomes a
ModelLoadError that names the manifest field and the value and says what to do.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import StableVideoDiffusionPipeline
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from svdflow.errors import ModelLoadError
from svdflow.models.source import (
    BUILTIN_TINY,
    BUILTIN_TOY,
    BUILTINS,
    TOY_FOLDER,
    describe_source,
    hub_cache_dir,
    offline_variable,
    resolve_local,
)
from svdflow.models.tiny_config import TINY_REVISION
from svdflow.models.toy_config import TOY_REVISION
from svdflow.pipeline.tiny import build_tiny_pipeline

_BUILTIN_REVISIONS = {BUILTIN_TINY: TINY_REVISION, BUILTIN_TOY: TOY_REVISION}

PIPELINE_CLASS = "StableVideoDiffusionPipeline"

_COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")
_SNAPSHOT_HASH = re.compile(r"[/\\]snapshots[/\\]([0-9a-f]{40})(?:[/\\]|$)")
_MISSING_WEIGHTS = re.compile(r"no file named (\S+) found in directory (.+?)\.?$")
# httpx, httpx2 (huggingface_hub >= 1), requests and the builtins name their "could not reach the
# server" errors differently; matching on these base-class names covers them all without importing
# each HTTP stack.
_NETWORK_ERROR_NAMES = {
    "TransportError",
    "NetworkError",
    "TimeoutException",
    "ConnectionError",
    "ConnectError",
}


def _dtype_kwarg() -> str:
    # Recent diffusers renamed from_pretrained's torch_dtype to dtype and warn on the old name;
    # older releases only know torch_dtype.
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return "torch_dtype"
    return "dtype"


_DTYPE_KWARG = _dtype_kwarg()


@dataclass(frozen=True)
class ModelSpec:
    """Which pipeline to load: the manifest's `model:` section."""

    source: str
    revision: str | None = None
    variant: str | None = None


def load_pipeline(
    spec: ModelSpec,
    *,
    torch_dtype: torch.dtype | None = None,
    manifest_dir: str | os.PathLike | None = None,
) -> StableVideoDiffusionPipeline:
    """The pipeline `spec` names, on the CPU, in `torch_dtype` (float32 when None).

    Raises ModelLoadError for anything that stops it from loading.
    """
    kind = describe_source(spec.source, manifest_dir)
    if kind == "builtin":
        pipe = _load_builtin(spec, torch_dtype)
    elif kind == "local":
        pipe = _load_local(spec, torch_dtype, manifest_dir)
    else:
        pipe = _load_hub(spec, torch_dtype)
    # The executor reports progress itself; diffusers' per-step tqdm bars would garble that.
    pipe.set_progress_bar_config(disable=True)
    return pipe


def resolved_revision(pipe: StableVideoDiffusionPipeline, spec: ModelSpec) -> str | None:
    """The commit actually loaded: a hub model's snapshot hash, a builtin's revision (`builtin-tiny-v1`),
    None for a folder.

    None too for a hub model whose commit cannot be told (not loaded through the hub cache).
    """
    kind = describe_source(spec.source)
    if kind == "builtin":
        return _BUILTIN_REVISIONS.get(spec.source)
    if kind == "local":
        return None
    # diffusers loads each component from the cache's snapshots/<commit>/ folder and records that
    # folder as the component's _name_or_path.
    for component in (pipe.unet, pipe.vae, pipe.image_encoder):
        config = getattr(component, "config", None)
        name_or_path = getattr(config, "_name_or_path", None)
        if name_or_path is None and hasattr(config, "get"):
            name_or_path = config.get("_name_or_path")
        match = _SNAPSHOT_HASH.search(str(name_or_path or ""))
        if match:
            return match.group(1)
    if spec.revision and _COMMIT_HASH.match(spec.revision):
        return spec.revision
    return None


def _load_builtin(spec: ModelSpec, torch_dtype: torch.dtype | None) -> StableVideoDiffusionPipeline:
    if spec.source not in BUILTINS:
        raise ModelLoadError(
            f"model.source: {spec.source}: no such builtin model; the builtins are {' and '.join(BUILTINS)}. "
            "Use a hub id (org/name) or a local folder for anything else."
        )
    how = "built from code" if spec.source == BUILTIN_TINY else "shipped with svdflow"
    revision = _BUILTIN_REVISIONS[spec.source]
    if spec.revision not in (None, revision):
        raise ModelLoadError(
            f"model.revision: {spec.revision}: {spec.source} is {how} and has one revision, "
            f"{revision}; set revision: null."
        )
    if spec.variant is not None:
        raise ModelLoadError(
            f"model.variant: {spec.variant}: {spec.source} is {how} and has no weight-file "
            "variants; set variant: null."
        )
    if spec.source == BUILTIN_TINY:
        return build_tiny_pipeline(torch_dtype or torch.float32)
    if not (TOY_FOLDER / "model_index.json").is_file():
        raise ModelLoadError(
            f"model.source: {BUILTIN_TOY}: its weights are missing from this installation ({TOY_FOLDER}); "
            "reinstall svdflow, or train them with `python training/train_toy.py` in a source checkout."
        )
    # The same call as any local folder: the toy is a pipeline folder saved with save_pretrained.
    pipe = _from_pretrained(str(TOY_FOLDER), ModelSpec(str(TOY_FOLDER)), torch_dtype, where=BUILTIN_TOY, local=True)
    _align_cpu_tensors_(pipe)
    return pipe


def _load_local(
    spec: ModelSpec, torch_dtype: torch.dtype | None, manifest_dir: str | os.PathLike | None
) -> StableVideoDiffusionPipeline:
    path = resolve_local(spec.source, manifest_dir)
    src = spec.source
    shown = f"{src} ({path})" if str(path) != src else src
    if not path.exists():
        raise ModelLoadError(
            f"model.source: {shown}: no such folder; relative paths are read from the manifest's folder. "
            "Fix the path, or give a hub id (org/name) to download the model."
        )
    if not path.is_dir():
        raise ModelLoadError(
            f"model.source: {shown}: is a file, not a folder; give the diffusers pipeline folder that "
            "holds model_index.json (single-file checkpoints are not supported)."
        )
    if not (path / "model_index.json").is_file():
        raise ModelLoadError(
            f"model.source: {shown}: no model_index.json in this folder, so it is not a diffusers "
            "pipeline folder. Point at the folder that holds model_index.json, or make one with "
            "`hf download <org/name> --local-dir <folder>` or `pipe.save_pretrained(<folder>)`."
        )
    try:
        class_name = json.loads((path / "model_index.json").read_text(encoding="utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelLoadError(
            f"model.source: {shown}: model_index.json cannot be read ({exc}); copy or download the folder again."
        ) from exc
    if class_name != PIPELINE_CLASS:
        # from_pretrained would force the folder into SVD's components and fail somewhere obscure.
        raise ModelLoadError(
            f"model.source: {shown}: model_index.json describes a {class_name}, not a {PIPELINE_CLASS}; "
            "svdflow renders with Stable Video Diffusion models only."
        )
    if spec.revision is not None:
        raise ModelLoadError(
            f"model.revision: {spec.revision}: a local folder has no revisions (they are for hub "
            "models); set revision: null."
        )
    pipe = _from_pretrained(str(path), spec, torch_dtype, where=shown, local=True)
    _align_cpu_tensors_(pipe)
    return pipe


def _load_hub(spec: ModelSpec, torch_dtype: torch.dtype | None) -> StableVideoDiffusionPipeline:
    pipe = _from_pretrained(spec.source, spec, torch_dtype, where=spec.source, local=False)
    _align_cpu_tensors_(pipe)
    return pipe


def _from_pretrained(
    path_or_id: str, spec: ModelSpec, torch_dtype: torch.dtype | None, *, where: str, local: bool
) -> StableVideoDiffusionPipeline:
    kwargs = {
        "revision": spec.revision,
        "variant": spec.variant,
        "use_safetensors": True,
        "trust_remote_code": False,
    }
    if torch_dtype is not None:
        kwargs[_DTYPE_KWARG] = torch_dtype
    offline = None if local else offline_variable()
    if offline:
        # huggingface_hub reads HF_HUB_OFFLINE once, at import; reading it here too makes a value set
        # later (by a test, a notebook, a wrapper script) count.
        kwargs["local_files_only"] = True
    cache_dir = None if local else hub_cache_dir()
    if cache_dir:
        kwargs["cache_dir"] = cache_dir
    try:
        return StableVideoDiffusionPipeline.from_pretrained(path_or_id, **kwargs)
    except Exception as exc:
        raise _explain(exc, spec, where=where, local=local, offline=offline) from exc


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _first(chain: list[BaseException], kind: type | tuple[type, ...]) -> BaseException | None:
    return next((e for e in chain if isinstance(e, kind)), None)


def _is_network_error(exc: BaseException) -> bool:
    return any(cls.__name__ in _NETWORK_ERROR_NAMES for cls in type(exc).__mro__)


def _root_message(exc: BaseException) -> str:
    return str(_chain(exc)[-1]) or type(exc).__name__


def _explain(
    exc: Exception, spec: ModelSpec, *, where: str, local: bool, offline: str | None
) -> ModelLoadError:
    chain = _chain(exc)
    src = spec.source
    at_revision = f" at revision {spec.revision}" if spec.revision else ""
    revision_flag = f" --revision {spec.revision}" if spec.revision else ""

    # Variant first: it is a plain ValueError that can only mean one thing.
    variant_error = next(
        (
            e
            for e in chain
            if isinstance(e, ValueError) and "variant=" in str(e) and "no such modeling files" in str(e)
        ),
        None,
    )
    if variant_error is not None:
        return ModelLoadError(
            f"model.variant: {spec.variant}: needs `*.{spec.variant}.safetensors` weight files, and "
            f"{where}{at_revision} has none. Set variant: null to load its default weight files."
        )
    if not local:
        gated = _first(chain, GatedRepoError)
        if gated is not None:
            return ModelLoadError(
                f"model.source: {src}: this model is gated. Accept its licence at https://huggingface.co/{src} "
                "while logged in, then log in on this machine with `hf auth login` (or set HF_TOKEN)."
            )
        if _first(chain, RepositoryNotFoundError) is not None:
            return ModelLoadError(
                f"model.source: {src}: no such model on the Hugging Face Hub, or it is private. Check the "
                "id (org/name); for a private model log in with `hf auth login` (or set HF_TOKEN). A local "
                "folder must exist, or be written as a path (./models/svd)."
            )
        if _first(chain, RevisionNotFoundError) is not None:
            return ModelLoadError(
                f"model.revision: {spec.revision}: no such branch, tag or commit in {src}. See "
                f"https://huggingface.co/{src}/commits/main, or set revision: null for the default branch."
            )
        if _first(chain, HFValidationError) is not None:
            return ModelLoadError(
                f"model.source: {src}: neither an existing folder nor a valid hub id (org/name). Write a "
                "local folder as a path (./models/svd), or fix the id."
            )
        unreachable = _first(chain, OfflineModeIsEnabled) or next(
            (e for e in chain if _is_network_error(e)), None
        )
        not_cached = _first(chain, LocalEntryNotFoundError)
        if offline and (unreachable is not None or not_cached is not None):
            return ModelLoadError(
                f"model.source: {src}: not in the local Hugging Face cache{at_revision}, and {offline}=1 "
                f"forbids downloading it. Download it on a connected machine with `hf download {src}"
                f"{revision_flag}` (and copy the cache, HF_HOME, here), or set {offline}=0 to let svdflow "
                "download it."
            )
        if unreachable is not None:
            return ModelLoadError(
                f"model.source: {src}: cannot reach the Hugging Face Hub ({_root_message(unreachable)}) and "
                f"the model is not in the local cache{at_revision}. Connect this machine, or download the "
                f"model on a connected machine with `hf download {src}{revision_flag}` and copy the cache "
                "(HF_HOME) here."
            )
        if not_cached is not None:
            return ModelLoadError(
                f"model.source: {src}: not fully in the local cache{at_revision} and could not be "
                f"downloaded ({not_cached}). Download it again with `hf download {src}{revision_flag}`."
            )
        http_error = _first(chain, HfHubHTTPError)
        if http_error is not None:
            return ModelLoadError(
                f"model.source: {src}: the Hugging Face Hub refused or failed the download "
                f"({str(http_error).splitlines()[0]}). Try again later, or check the id and your login."
            )
    for e in chain:
        message = str(e)
        if not isinstance(e, OSError) or "safetensors" not in message:
            continue
        # Local folders: "Error no file named <weights> found in directory <folder>." Hub repos:
        # "Could not find the necessary `safetensors` weights in [<every file of the repo>] ...".
        match = _MISSING_WEIGHTS.search(message)
        if match:
            folder = Path(match.group(2))
            what = f"{folder.name} has"
            pickled = folder.is_dir() and any(folder.glob("*.bin"))
        else:
            what = f"it has{at_revision}"
            pickled = ".bin" in message
        if pickled:
            fix = (
                "only pickled .bin weights are there, which svdflow does not load because unpickling can "
                "run code. Convert them once, in an environment you trust, with "
                "`StableVideoDiffusionPipeline.from_pretrained(path).save_pretrained(folder, safe_serialization=True)` "
                "and use that folder."
            )
        else:
            fix = "the files look incomplete; download or copy them again."
        return ModelLoadError(f"model.source: {where}: {what} no safetensors weights: {fix}")
    return ModelLoadError(
        f"model.source: {where}: the pipeline could not be loaded: {type(exc).__name__}: {exc}"
    )


def _align_cpu_tensors_(pipe: StableVideoDiffusionPipeline) -> None:
    """Copy CPU weights that safetensors left at unaligned addresses into fresh, aligned memory.

    Weights read from a file sit at whatever offset the file put them, and CPU kernels take other
    SIMD paths for unaligned data, so the same weights gave frames that differ in the 5th decimal
    depending on the file layout. Aligned, a saved-and-reloaded pipeline renders bit-identical frames.
    """
    for component in pipe.components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        for module in component.modules():
            for param in module.parameters(recurse=False):
                if param.device.type == "cpu" and param.data_ptr() % 64:
                    param.data = param.data.clone()
            for name, buffer in module.named_buffers(recurse=False):
                if buffer is not None and buffer.device.type == "cpu" and buffer.data_ptr() % 64:
                    module._buffers[name] = buffer.clone()
