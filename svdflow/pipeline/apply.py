"""Applying resolved hardware settings to a loaded pipeline: dtype, the exact cross-attention shortcut,
the attention kernel, placement, offload, the settings that switch in place, FP8, compilation."""

from __future__ import annotations

from svdflow.hardware import ResolvedHardware
from svdflow.pipeline.device import torch_dtype
from svdflow.pipeline.process_state import ProcessChanges


def apply_hardware(pipe, hw: ResolvedHardware, changes: ProcessChanges):
    """Place and configure the pipeline as `hw` says; returns the same pipeline. Process-wide
    settings it changes are recorded in `changes`, for the caller to restore."""
    import torch

    from svdflow.pipeline.hooks.attention_backend import set_attention_backend
    from svdflow.pipeline.hooks.cross_attention import set_cross_attention_shortcut

    if pipe.unet.dtype != torch_dtype(hw.dtype):  # diffusers warns on every cast, even a no-op one
        pipe.to(dtype=torch_dtype(hw.dtype))
    set_cross_attention_shortcut(pipe.unet, True)  # exact, so in every profile
    if hw.device.startswith("cuda"):
        fast_kernels(changes)
    # svdflow's UNet hooks go on before the offload hooks, beneath them: group offloading's lazy
    # prefetch hook removes itself after the first call, and diffusers then bypasses any hook with
    # its own forward registered above it (sequential CFG would silently stop splitting the batch).
    set_attention_backend(pipe.unet, hw.attention_backend)
    configure_unet(pipe.unet, hw)
    if hw.offload == "none":
        pipe.to(hw.device)
    elif hw.offload == "model":
        pipe.enable_model_cpu_offload(device=hw.device)
    elif hw.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=hw.device)
    elif hw.offload == "group":
        _group_offload(pipe, torch.device(hw.device))
    if hw.fp8:  # quantises the weights where they now are (resident: fp8 needs offload none)
        from svdflow.pipeline.hooks.fp8 import set_fp8

        set_fp8(pipe.unet, True)
    if hw.compile:
        from svdflow.pipeline.compile import compile_unet

        compile_unet(pipe, changes)
    if hw.compile_vae:
        from svdflow.pipeline.compile import compile_vae_decoder

        compile_vae_decoder(pipe, changes)
    return pipe


def fast_kernels(changes: ProcessChanges) -> None:
    """TF32 for float32 matmuls (the VAE encodes in float32), until `changes` is restored.

    cuDNN's conv autotuning (cudnn.benchmark) is deliberately left off: on an H200 it made the SVD-XT
    UNet step no faster (0.640 s against 0.632 without), cost 12 s on the first video, and its trial
    workspaces pushed the peak allocation to 134 GiB, the whole card.
    """
    import torch

    changes.call(torch.set_float32_matmul_precision, torch.get_float32_matmul_precision, "high")


def configure_unet(unet, hw: ResolvedHardware) -> None:
    """The settings that switch in place, without loading the pipeline again."""
    from svdflow.pipeline.hooks.sequential_cfg import set_sequential_cfg

    set_forward_chunking(unet, hw.forward_chunking)
    set_sequential_cfg(unet, hw.sequential_cfg)


def set_forward_chunking(unet, enabled: bool) -> None:
    """Feed-forward layers in chunks (spatial blocks frame by frame, temporal ones by frame too),
    or all at once. Unlike diffusers' enable_forward_chunking, this can also switch it off."""
    for module in unet.modules():
        if hasattr(module, "set_chunk_feed_forward"):
            module.set_chunk_feed_forward(1 if enabled else None, dim=0)


def _group_offload(pipe, device) -> None:
    import torch
    from diffusers.hooks import apply_group_offloading

    streams = device.type == "cuda"  # copy the next layer in while this one computes
    # Layer by layer, each prefetched on a side stream. record_stream lets the allocator track the
    # side stream's copies, so offloading a layer need not synchronise the GPU; without it, this
    # layout measured 0.76 s/step against 0.63 resident on an H200 (with it: not yet measured).
    # Block level measured 4.0 s/step on an H200 (with cuDNN autotuning on, which may have added to
    # it). Part of that is structural: this UNet's mid block is no list entry, so it lands in the
    # top-level group, which diffusers moves synchronously to pageable memory and back on every
    # UNet call, twice per step with sequential CFG.
    options = {"use_stream": streams, "record_stream": streams}
    pipe.unet.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"),
                                   offload_type="leaf_level", **options)
    # CLIP runs once per video: streaming it keeps ~1.2 GiB off the GPU at no noticeable cost.
    apply_group_offloading(pipe.image_encoder, onload_device=device, offload_device=torch.device("cpu"),
                           offload_type="leaf_level", **options)
    # The VAE stays resident: the pipeline upcasts it to float32 to encode, and the group hooks
    # do not follow a dtype change. It is small (~0.2 GiB).
    pipe.vae.to(device)
