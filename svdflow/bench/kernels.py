"""Where the time goes: GPU kernels (CPU operators on a CPU) by kind and the top ones, for two
denoising steps and, apart, one VAE decode."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from svdflow.bench.clock import StepClock, call_pipeline
from svdflow.bench.config import BenchConfig

_KERNEL_KINDS = (
    ("attention", ("flash", "fmha", "attention", "attn", "sdpa")),
    ("norm", ("norm", "welford")),
    ("conv", ("conv", "implicit_gemm", "cudnn", "xmma_fprop", "dgrad", "wgrad", "fprop")),
    ("gemm", ("gemm", "cutlass", "cublas", "matmul", "nvjet", "ampere_", "wmma", "addmm", "aten::mm", "bmm")),
    ("triton (fused)", ("triton",)),
    ("copy/layout", ("copy", "cat", "transpose", "permute", "nchw", "nhwc", "memcpy", "memset")),
    ("elementwise", ("elementwise", "vectorized", "unrolled", "reduce")),
)


def kernel_profile(config: BenchConfig, pipe, image, decode_chunk_size, latents) -> dict[str, Any]:
    """Where the GPU time goes, by kind and top kernels: a 2-step call (CLIP, VAE encode, two UNet
    steps; latents out) and, apart, the VAE decode of one video's final latents."""
    from svdflow.pipeline.render import decode_frames

    def two_steps():
        with StepClock(pipe, config.cuda) as clock:
            clock.start()
            call_pipeline(pipe, config, image, decode_chunk_size=decode_chunk_size, steps=2, clock=clock, latent=True)

    def decode():
        # A run's decode: the clock's float32 host latents back on the VAE in its dtype, to uint8 frames.
        decode_frames(pipe, latents.to(pipe.vae.device, pipe.vae.dtype), config.num_frames, decode_chunk_size)

    out = {}
    for name, work in (("denoise", two_steps), ("decode", decode)):
        try:
            out[name] = profile_kernels(work, config.cuda)
        except Exception as exc:  # a breakdown is a diagnosis: it must not cost the case its timings
            out[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    return out


def profile_kernels(work: Callable[[], None], cuda: bool) -> dict[str, Any]:
    """GPU kernels by self time on CUDA; on a CPU, operators by self CPU time (to test the path)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        work()
        if cuda:
            torch.cuda.synchronize()
    kernels = []
    for event in prof.key_averages():
        if cuda:
            us = getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0)
        else:
            us = event.self_cpu_time_total
        if us > 0:
            kernels.append((event.key, us / 1e6, event.count))
    total = sum(s for _, s, _ in kernels) or 1.0
    kinds: dict[str, float] = {}
    for name, seconds, _ in kernels:
        lowered = name.lower()
        kind = next((k for k, words in _KERNEL_KINDS if any(w in lowered for w in words)), "other")
        kinds[kind] = kinds.get(kind, 0.0) + seconds
    top = sorted(kernels, key=lambda k: -k[1])[:15]
    return {"total_s": round(total, 3), "by_kind": {k: round(v / total, 3) for k, v in
                                                    sorted(kinds.items(), key=lambda kv: -kv[1])},
            "top": [{"kernel": n[:120], "s": round(s, 4), "calls": c, "share": round(s / total, 3)} for n, s, c in top]}
