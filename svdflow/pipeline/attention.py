"""Which scaled-dot-product-attention kernel is fastest for the UNet's attention on this GPU.

Torch picks a backend per call by what each can take, not by speed; for SVD's two attention shapes
(spatial: frames x branches sequences of height/8 x width/8 tokens; temporal: one sequence of
`frames` tokens per latent pixel) cuDNN, flash and memory-efficient kernels all qualify and differ.
The probe times each on the outermost level's shapes (where ~90 % of the attention FLOPs are) and
the fastest goes first in the UNet's priority order (svdflow.pipeline.hooks.attention_backend). The
math backend is never a candidate on a GPU: it materialises the whole score matrix (~42 GiB for
SVD-XT's spatial attention at 576x1024x25).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from svdflow.hardware import Shape

GPU_CANDIDATES = ("cudnn", "flash", "efficient")
AttentionShape = tuple[int, int, int, int]  # (batch, heads, tokens, head_dim)


def attention_shapes(unet_config, shape: Shape, branches: int = 2) -> list[AttentionShape]:
    """The self-attention shapes of the UNet's outermost level for a job of `shape` with CFG."""
    frames, height, width = shape
    heads = unet_config.num_attention_heads
    heads = int(heads[0] if isinstance(heads, (list, tuple)) else heads)
    head_dim = unet_config.block_out_channels[0] // heads
    tokens = (height // 8) * (width // 8)
    return [(branches * frames, heads, tokens, head_dim), (branches * tokens, heads, frames, head_dim)]


def time_backends(shapes: Sequence[AttentionShape], device, dtype, candidates: Sequence[str] = GPU_CANDIDATES,
                  repeats: int = 3) -> dict[str, float | None]:
    """Seconds per backend for one call of each shape (median of `repeats` after a warm-up), or None
    where the backend cannot take them."""
    import torch
    from torch.nn.attention import sdpa_kernel

    from svdflow.pipeline.hooks.attention_backend import BACKENDS

    cuda = torch.device(device).type == "cuda"
    generator = torch.Generator(device=device).manual_seed(0)
    inputs = [[torch.randn(s, generator=generator, device=device, dtype=dtype) for _ in range(3)] for s in shapes]

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    timings: dict[str, float | None] = {}
    with torch.inference_mode():
        for name in candidates:
            try:
                with sdpa_kernel([BACKENDS[name]]):
                    for q, k, v in inputs:  # warm-up: kernel selection, workspaces
                        torch.nn.functional.scaled_dot_product_attention(q, k, v)
                    runs = []
                    for _ in range(repeats):
                        sync()
                        began = time.perf_counter()
                        for q, k, v in inputs:
                            torch.nn.functional.scaled_dot_product_attention(q, k, v)
                        sync()
                        runs.append(time.perf_counter() - began)
                timings[name] = sorted(runs)[len(runs) // 2]
            except RuntimeError:  # "No available kernel": the backend cannot take these shapes here
                timings[name] = None
    return timings


def fastest(timings: dict[str, float | None]) -> str | None:
    measured = {name: s for name, s in timings.items() if s is not None}
    return min(measured, key=measured.get) if measured else None


def choose_attention_backend(unet, device, shape: Shape, candidates: Sequence[str] = GPU_CANDIDATES) -> str | None:
    """The backend to put first for `unet` on `device` at `shape`; None where torch cannot order
    backends (it would then have to exclude the others) or none of them runs."""
    from svdflow.pipeline.hooks.attention_backend import orders_backends

    if not orders_backends():
        return None
    return fastest(time_backends(attention_shapes(unet.config, shape), device, unet.dtype, candidates))
