"""The lossless kernel choices, as far as a CPU runs them: the attention backend hook and its probe,
the compiled VAE decoder (dynamo's eager backend: the real tracing and hook, no inductor build), and
the order svdflow's UNet hooks go on relative to group offloading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.hooks import HookRegistry

from svdflow.hardware import ResolvedHardware
from svdflow.manifest.schema import JobParams
from svdflow.pipeline.attention import attention_shapes, fastest, time_backends
from svdflow.pipeline.hooks.attention_backend import HOOK_NAME, priority, set_attention_backend
from svdflow.pipeline.render import decode_frames, denoise_latents, torch_threads
from svdflow.pipeline.tiny import SVD_UNET_CONFIG, build_tiny_pipeline

PARAMS = JobParams(num_frames=3, num_inference_steps=2, width=64, height=64, playback_fps=7.0)


def test_the_probe_times_svds_outermost_attention_shapes():
    from types import SimpleNamespace

    config = SimpleNamespace(**SVD_UNET_CONFIG)
    # SVD-XT at 576x1024x25 with CFG: 50 sequences of 9,216 tokens (spatial), 18,432 of 25 (temporal),
    # 5 heads of 64.
    assert attention_shapes(config, (25, 576, 1024)) == [(50, 5, 9216, 64), (18432, 5, 25, 64)]
    timings = time_backends([(2, 2, 16, 8), (8, 2, 3, 8)], "cpu", torch.float32, ("cudnn", "flash", "math"),
                            repeats=1)
    assert timings["cudnn"] is None and timings["flash"] > 0 and timings["math"] > 0  # no cuDNN on a CPU
    assert fastest(timings) in ("flash", "math") and fastest({"cudnn": None}) is None


def test_the_backend_hook_puts_one_kernel_first_around_the_unets_forward(tiny_pipe, noise_image):
    pipe, image = tiny_pipe, noise_image
    assert [b.name for b in priority("flash")] == ["FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION",
                                                   "MATH"]
    with torch_threads(1):
        plain = denoise_latents(pipe, image, PARAMS)
        # cuDNN first: a CPU has none, so the next in line (flash) runs, as without the hook.
        set_attention_backend(pipe.unet, "cudnn")
        assert torch.equal(denoise_latents(pipe, image, PARAMS), plain)
        # Only cuDNN: the UNet's attention finds no kernel, which shows the context is in force there.
        set_attention_backend(pipe.unet, "cudnn", exclusive=True)
        with pytest.raises(RuntimeError, match="No viable backend for scaled_dot_product_attention"):
            denoise_latents(pipe, image, PARAMS)
        set_attention_backend(pipe.unet, None)
        assert HookRegistry.check_if_exists_or_initialize(pipe.unet).get_hook(HOOK_NAME) is None
        assert torch.equal(denoise_latents(pipe, image, PARAMS), plain)


@pytest.mark.slow  # torch.compile's first trace in a process: several seconds
def test_the_compiled_vae_decoder_decodes_the_same_frames(tiny_pipe):
    pipe = tiny_pipe
    from svdflow.pipeline.compile import compile_vae_decoder
    from svdflow.pipeline.hooks.regional_compile import HOOK_NAME as COMPILED
    from svdflow.pipeline.hooks.regional_compile import remove_compiled_forward
    from svdflow.pipeline.process_state import ProcessChanges

    latents = torch.randn(1, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch_threads(1):
        plain = decode_frames(pipe, latents, 3, 2)
        changes = ProcessChanges()
        try:
            compile_vae_decoder(pipe, changes, backend="eager")
            registry = HookRegistry.check_if_exists_or_initialize(pipe.vae.decoder)
            hook = registry.get_hook(COMPILED)
            compiled = decode_frames(pipe, latents, 3, 2)
            assert hook.compiled is not None  # the decoder went through torch.compile
        finally:
            remove_compiled_forward(pipe.vae.decoder)
            changes.restore()
    assert np.array_equal(compiled, plain)
    assert registry.get_hook(COMPILED) is None


class _RemovesItself:
    """What group offloading with CUDA streams puts on the UNet (diffusers' lazy prefetch hook): a hook
    that removes itself after the first call. A CPU has no streams, so it is imitated here."""

    NAME = "lazy_prefetch_group_offloading"

    @classmethod
    def register(cls, module) -> None:
        from diffusers.hooks import ModelHook

        class Hook(ModelHook):
            def post_forward(self, module, output):
                HookRegistry.check_if_exists_or_initialize(module).remove_hook(cls.NAME, recurse=False)
                return output

        HookRegistry.check_if_exists_or_initialize(module).register_hook(Hook(), cls.NAME)


def test_svdflows_unet_hooks_sit_beneath_group_offloadings(noise_image, monkeypatch):
    image = noise_image
    """diffusers bypasses a hook with its own forward once a hook beneath it removes itself: sequential
    CFG registered after group offloading stopped splitting the batch after the first step."""
    from svdflow.pipeline import apply
    from svdflow.pipeline.hooks.sequential_cfg import HOOK_NAME as SEQUENTIAL
    from svdflow.pipeline.process_state import ProcessChanges

    real = apply._group_offload

    def group_offload_with_streams(pipe, device):
        real(pipe, device)
        _RemovesItself.register(pipe.unet)

    monkeypatch.setattr(apply, "_group_offload", group_offload_with_streams)
    pipe = build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    hw = ResolvedHardware(profile="low-vram", device="cpu", dtype="float32", offload="group", forward_chunking=True,
                          decode_chunk_size=2, compile=False, sequential_cfg=True, attention_backend="flash")
    apply.apply_hardware(pipe, hw, ProcessChanges())
    assert list(HookRegistry.check_if_exists_or_initialize(pipe.unet).hooks) == [
        HOOK_NAME, SEQUENTIAL, _RemovesItself.NAME]
    batches = []
    pipe.unet.conv_in.register_forward_pre_hook(lambda _m, a: batches.append(a[0].shape[0] // 3))
    with torch_threads(1):
        denoise_latents(pipe, image, PARAMS)
    assert batches == [1, 1, 1, 1]  # one CFG branch per UNet call, on every step
    assert list(HookRegistry.check_if_exists_or_initialize(pipe.unet).hooks) == [HOOK_NAME, SEQUENTIAL]
