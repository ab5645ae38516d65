"""torch.compile of the UNet, and the inductor cache kept across runs so that a second run's
compile is a cache load; markers that tell `compile: auto` which shapes the cache holds."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from svdflow.hardware import Shape
from svdflow.pipeline.process_state import ProcessChanges
from svdflow.settings import user_cache_dir


def inductor_cache_dir(env: Mapping[str, str] | None = None) -> str:
    """The user's TORCHINDUCTOR_CACHE_DIR, else svdflow's own folder under the user cache.

    PyTorch's default lives under /tmp, which many machines wipe at boot: the ~70 s compile
    would then be paid again by every run.
    """
    env = os.environ if env is None else env
    if env.get("TORCHINDUCTOR_CACHE_DIR"):
        return env["TORCHINDUCTOR_CACHE_DIR"]
    return os.path.join(user_cache_dir(env), "inductor")


def configure_compile_cache(changes: ProcessChanges) -> str:
    """Point inductor's on-disk caches at a stable folder (user settings win), for as long as
    `changes` is not restored; returns the folder."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    folder = changes.setenv_default("TORCHINDUCTOR_CACHE_DIR", inductor_cache_dir())
    graph_cache = changes.setenv_default("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    autograd_cache = changes.setenv_default("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    # Compiled Triton kernels belong with the graphs that use them, not in ~/.triton.
    changes.setenv_default("TRITON_CACHE_DIR", os.path.join(folder, "triton"))
    # The config modules read these variables once, when first imported.
    changes.set_attr(inductor_config, "fx_graph_cache", graph_cache == "1")
    changes.set_attr(functorch_config, "enable_autograd_cache", autograd_cache == "1")
    return folder


def compile_marker(model_key: str, dtype: str, device_name: str, shape: Shape,
                   env: Mapping[str, str] | None = None) -> Path:
    """A file that says "this model, dtype, GPU and shape compiled here before": the cache is warm.

    The inductor cache has no cheap query for that; svdflow writes this marker after a compiled
    render succeeds and `compile: auto` reads it.
    """
    import torch

    key = "|".join((model_key, dtype, device_name, "x".join(map(str, shape)), torch.__version__))
    return Path(inductor_cache_dir(env)) / "svdflow-warm" / hashlib.sha256(key.encode()).hexdigest()[:24]


def compile_unet(pipe, changes: ProcessChanges, *, regional: bool = True, backend: str = "inductor",
                 mode: str = "default", coordinate_descent: bool = False) -> None:
    """torch.compile the UNet for speed: no CUDA graphs, static shapes, cache on disk.

    CUDA graphs ("reduce-overhead") measured no faster than the default mode on an H200 (the UNet
    step is ~0.5 s, launch overhead is noise) and pin memory per shape, so the default mode.
    dynamic=False: each (frames, height, width) gets its own specialised graph; jobs should run
    grouped by shape (svdflow.hardware.shape_groups). `regional=False` compiles the whole UNet as one
    graph. `backend` other than inductor is for tests. `mode` ("max-autotune-no-cudagraphs") and
    `coordinate_descent` (inductor's tuning of each Triton kernel's launch parameters) trade a longer
    compile for faster kernels; `svdflow bench` measures both against their compile cost.
    """
    from svdflow.pipeline.hooks.regional_compile import apply_regional_compile

    _compile_settings(changes, coordinate_descent)
    options = {"mode": mode, "fullgraph": False, "dynamic": False, "backend": backend}
    if regional:
        apply_regional_compile(pipe.unet, **options)
    else:
        pipe.unet.compile(**options)


def compile_vae_decoder(pipe, changes: ProcessChanges, *, backend: str = "inductor") -> None:
    """torch.compile the VAE's decoder (idempotent). One graph per decode chunk size: 25 frames in
    chunks of 8 compile for 8 and for the last 1."""
    from svdflow.pipeline.hooks.regional_compile import compile_forward

    _compile_settings(changes, False)
    compile_forward(pipe.vae.decoder, mode="default", fullgraph=False, dynamic=False, backend=backend)


def _compile_settings(changes: ProcessChanges, coordinate_descent: bool) -> None:
    import torch._dynamo
    import torch._inductor.config as inductor_config

    configure_compile_cache(changes)
    # A run with many shapes must not silently fall back to eager after the 8th; regional
    # compilation also keeps one graph per block variant (channels x resolution) under one code object.
    config = torch._dynamo.config
    limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # renamed in 2.6
    changes.set_attr(config, limit, max(getattr(config, limit), 256))
    if hasattr(config, "accumulated_recompile_limit"):
        changes.set_attr(config, "accumulated_recompile_limit", max(config.accumulated_recompile_limit, 4096))
    # 1x1 convs as matmuls: a GEMM with fusable epilogues instead of a cuDNN call (PyTorch's
    # SDXL recipe); the UNet has many (resnet shortcuts, transformer proj_in/out).
    changes.set_attr(inductor_config, "conv_1x1_as_mm", True)
    if coordinate_descent:
        changes.set_attr(inductor_config, "coordinate_descent_tuning", True)
