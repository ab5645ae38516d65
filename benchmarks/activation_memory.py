"""Estimated activation memory of the full-size SVD(-XT) models, per phase and setting, on a CPU.

The models are built on PyTorch's meta device (shapes only, nothing allocated) and run once per
setting under a dispatch mode that adds up the bytes of every op's fresh output while it is alive.
That is the peak of live activations, as the caching allocator would see it without fragmentation,
cuDNN workspaces or attention internals: attention is counted as a fused kernel does (its output,
not the N x N scores). Weights are listed apart.

Checked once against a GPU: the H200 run of 2026-11-26 measured max-speed's peak at 13.39 GiB
allocated with decode chunks of 8; this gives weights 4.20 + decode 9.00 = 13.20 GiB.

    python benchmarks/activation_memory.py [--variant xt] [--size 576x1024] [--frames 25]
"""

from __future__ import annotations

import argparse
import weakref

import torch
import torch.nn.functional as F
from diffusers.utils import logging as diffusers_logging
from torch.utils._python_dispatch import TorchDispatchMode

from svdflow.pipeline.apply import set_forward_chunking
from svdflow.pipeline.hooks.sequential_cfg import set_sequential_cfg
from svdflow.pipeline.tiny import FULL_SIZE_NUM_FRAMES, build_full_size_pipeline

GIB = 1024**3


class LiveBytes(TorchDispatchMode):
    """Bytes of op outputs alive right now, and the most there were."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(a) for a in (*args, *(kwargs or {}).values()) if isinstance(a, torch.Tensor)}
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            # In-place results and views share memory that is already counted.
            if isinstance(tensor, torch.Tensor) and id(tensor) not in inputs and not tensor._is_view():
                size = tensor.numel() * tensor.element_size()
                self.live += size
                weakref.finalize(tensor, self._free, size)
        self.peak = max(self.peak, self.live)
        return out

    def _free(self, size: int) -> None:
        self.live -= size


def fused_attention(query, key, value, *args, **kwargs):
    """On meta, SDPA would take the math path and count the N x N scores a GPU never holds."""
    return torch.empty(query.shape[:-1] + (value.shape[-1],), dtype=query.dtype, device=query.device)


def peak_of(work) -> float:
    mode = LiveBytes()
    with torch.inference_mode(), mode:
        result = work()
    del result
    return mode.peak / GIB


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=sorted(FULL_SIZE_NUM_FRAMES), default="xt")
    parser.add_argument("--size", default="576x1024", help="HEIGHTxWIDTH")
    parser.add_argument("--frames", type=int, default=None, help="default: the variant's")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.split("x"))
    frames = args.frames or FULL_SIZE_NUM_FRAMES[args.variant]
    F.scaled_dot_product_attention = fused_attention  # diffusers looks it up on every call
    diffusers_logging.set_verbosity_error()  # the float32 cast below warns, as in the pipeline
    pipe = build_full_size_pipeline(args.variant, dtype=torch.float16, device="meta")
    unet, vae = pipe.unet, pipe.vae
    h, w = height // pipe.vae_scale_factor, width // pipe.vae_scale_factor
    meta = {"dtype": torch.float16, "device": "meta"}

    rows = [(f"weights, float16: UNet {_gib(unet)}, CLIP {_gib(pipe.image_encoder)}, VAE {_gib(vae)}", None)]
    for batch, chunking, sequential in ((2, False, False), (2, True, False), (2, True, True)):
        set_forward_chunking(unet, chunking)
        set_sequential_cfg(unet, sequential)
        peak = peak_of(lambda batch=batch: unet(
            torch.empty(batch, frames, 8, h, w, **meta), torch.tensor(1.0, device="meta"),
            encoder_hidden_states=torch.empty(batch, 1, 1024, **meta),
            added_time_ids=torch.empty(batch, 3, **meta), return_dict=False)[0])
        rows.append((f"UNet call, CFG batch 2, forward chunking {chunking}, sequential CFG {sequential}", peak))
    for chunk in (8, 4, 2, 1):
        peak = peak_of(lambda chunk=chunk: vae.decode(torch.empty(chunk, 4, h, w, **meta), num_frames=chunk).sample)
        rows.append((f"VAE decode, chunks of {chunk} frames", peak))
    vae.to(torch.float32)  # as the pipeline encodes
    peak = peak_of(lambda: vae.encode(torch.empty(1, 3, height, width, dtype=torch.float32, device="meta"))
                   .latent_dist.mode())
    rows.append(("VAE encode (float32, as the pipeline upcasts it)", peak))

    print(f"estimated activation peaks, SVD-{args.variant.upper()} {frames}x{height}x{width}, float16 (GiB)")
    for label, peak in rows:
        print(f"  {label}" if peak is None else f"  {peak:6.2f}  {label}")


def _gib(model) -> str:
    return f"{sum(p.numel() * p.element_size() for p in model.parameters()) / GIB:.2f}"


if __name__ == "__main__":
    main()
