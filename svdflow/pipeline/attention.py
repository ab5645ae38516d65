"""Which scaled-dot-product attention kernel the UNet runs: PyTorch's own choice, or cuDNN's first.

diffusers' attention processors call `F.scaled_dot_product_attention`, and PyTorch picks a kernel
per call (flash, memory-efficient, cuDNN, math) by a fixed priority. On Hopper GPUs cuDNN's
kernel can beat the default FlashAttention-2 at SVD's head size (64), but whether it does, and
whether it accepts every one of the UNet's shapes (the temporal attention has a batch of
2 x height/8 x width/8 sequences of num_frames), depends on the GPU, cuDNN and PyTorch builds.
So it is measured, not assumed: `probe` times both orders on the UNet's real attention shapes,
checks that cuDNN's outputs match, and `max-speed` picks the faster.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

ATTENTION_CHOICES = ("default", "cudnn")
# cuDNN must win by this much to be chosen: below it, timing noise decides, and the default is the
# kernel every other profile (and the eager reference) runs.
MIN_GAIN = 0.03
# Largest |cudnn - default| / max|default| accepted: both accumulate in float32 and round to fp16
# (unit roundoff 4.9e-4), so a correct kernel differs by a few roundoffs; a wrong one by O(1).
MAX_REL_ERROR = 1e-2


@dataclass(frozen=True)
class AttentionShape:
    """One attention call as diffusers makes it: q (batch, heads, queries, head_dim), k/v with `keys`."""

    kind: str  # spatial | temporal | cross
    level: int  # UNet resolution level, 0 = full latent size
    batch: int
    heads: int
    queries: int
    keys: int
    head_dim: int
    calls: int  # per UNet step

    def describe(self) -> str:
        return f"{self.kind}@{self.level} {self.batch}x{self.heads}x{self.queries}x{self.keys}x{self.head_dim}"


def unet_attention_shapes(config: Mapping[str, Any], num_frames: int, height: int, width: int,
                          cfg_batch: int = 2) -> list[AttentionShape]:
    """The attention calls of one step of a UNetSpatioTemporalConditionModel with this config.

    Each TransformerSpatioTemporalModel runs a spatial block (self-attention over the frame's
    tokens, cross-attention to the one image token) and a temporal block (self-attention over the
    frames at every position, then cross-attention). Down levels with attention hold
    layers_per_block of them, up levels one more, the mid block one.
    """
    layers = int(config["layers_per_block"])
    heads_per_level = config["num_attention_heads"]
    channels = config["block_out_channels"]
    counts: dict[int, int] = {}
    for level, kind in enumerate(config["down_block_types"]):
        if kind.startswith("CrossAttn"):
            counts[level] = counts.get(level, 0) + layers
    last = len(channels) - 1
    for position, kind in enumerate(config["up_block_types"]):
        if kind.startswith("CrossAttn"):
            level = last - position
            counts[level] = counts.get(level, 0) + layers + 1
    counts[last] = counts.get(last, 0) + 1  # mid block
    shapes = []
    for level in sorted(counts):
        heads = heads_per_level[level] if not isinstance(heads_per_level, int) else heads_per_level
        head_dim = channels[level] // heads
        tokens = (height // 8 >> level) * (width // 8 >> level)
        frames = cfg_batch * num_frames
        n = counts[level]
        shapes += [AttentionShape("spatial", level, frames, heads, tokens, tokens, head_dim, n),
                   AttentionShape("cross", level, frames, heads, tokens, 1, head_dim, n),
                   AttentionShape("temporal", level, cfg_batch * tokens, heads, num_frames, num_frames, head_dim, n),
                   AttentionShape("cross", level, cfg_batch * tokens, heads, num_frames, 1, head_dim, n)]
    return shapes


@contextmanager
def attention_backends(choice: str) -> Iterator[None]:
    """Run the block with `choice`'s kernel order ("default": PyTorch's, untouched)."""
    if choice == "default":
        with nullcontext():
            yield
        return
    if choice != "cudnn":
        raise ValueError(f"attention {choice!r} is not one of {', '.join(ATTENTION_CHOICES)}")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # cuDNN first where it accepts the call, PyTorch's usual order after it for the rest.
    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    with sdpa_kernel(order, set_priority=True):
        yield


def probe(shapes: list[AttentionShape], device: str, dtype, repeats: int = 3,
          compiled: bool = False) -> dict[str, Any]:
    """Time every shape under each choice (`calls` times per step) and compare cuDNN's outputs
    with the default's. Returns the per-step seconds of each choice, the worst error, the chosen
    one, and why. `compiled`: the UNet will be torch.compile'd, so cuDNN must also work there
    (checked on the smallest shape before it is chosen)."""
    import torch

    totals = dict.fromkeys(ATTENTION_CHOICES, 0.0)
    rows, failure = [], None
    generator = torch.Generator(device=device).manual_seed(0)
    for shape in shapes:
        row, shape_failure = _probe_shape(shape, device, dtype, generator, repeats)
        rows.append(row)
        failure = failure or shape_failure
        for choice in ATTENTION_CHOICES:
            totals[choice] += (row[choice] or 0.0) / 1e3 * shape.calls
    worst = max((row.get("cudnn_rel_error", 0.0) for row in rows), default=0.0)
    if compiled and not failure and shapes:
        failure = _compile_failure(min(shapes, key=lambda s: s.batch * s.queries), device, dtype)
    chosen, reason = decide(totals, worst, failure)
    return {"shapes": rows, "step_s": {choice: round(total, 5) for choice, total in totals.items()},
            "cudnn_worst_rel_error": worst, "chosen": chosen, "reason": reason}


def _probe_shape(shape: AttentionShape, device: str, dtype, generator, repeats: int) -> tuple[dict, str | None]:
    """One shape: ms per call under each choice (None where it failed), cuDNN's error, a failure."""
    import torch
    import torch.nn.functional as F

    def make(length: int):
        # diffusers' layout: (batch, tokens, heads * head_dim) viewed as (batch, heads, tokens, head_dim)
        x = torch.randn(shape.batch, length, shape.heads * shape.head_dim, device=device, dtype=dtype,
                        generator=generator)
        return x.view(shape.batch, length, shape.heads, shape.head_dim).transpose(1, 2)

    q, k, v = make(shape.queries), make(shape.keys), make(shape.keys)
    row: dict[str, Any] = {"shape": shape.describe(), "calls": shape.calls}
    outputs, failure = {}, None
    for choice in ATTENTION_CHOICES:
        try:
            with attention_backends(choice):
                outputs[choice] = F.scaled_dot_product_attention(q, k, v)  # warm-up, and the output
                seconds = _time(lambda: F.scaled_dot_product_attention(q, k, v), device, repeats)
        except Exception as exc:  # unsupported here (no kernel, older PyTorch): not chosen, noted
            failure = failure or f"{choice} failed on {shape.describe()}: {type(exc).__name__}: " \
                                 f"{str(exc).splitlines()[0][:200] if str(exc) else ''}"
            row[choice] = None
            continue
        row[choice] = round(seconds * 1e3, 4)
    if len(outputs) == len(ATTENTION_CHOICES):
        reference = outputs["default"].float()
        row["cudnn_rel_error"] = float((outputs["cudnn"].float() - reference).abs().max()
                                       / reference.abs().max().clamp_min(1e-6))
    return row, failure


def decide(step_s: Mapping[str, float], worst_error: float, failure: str | None) -> tuple[str, str]:
    """cuDNN when it ran every shape, matched the default and saved at least MIN_GAIN; else default."""
    cudnn, default = step_s["cudnn"] * 1e3, step_s["default"] * 1e3
    if failure:
        return "default", failure
    if worst_error > MAX_REL_ERROR:
        return "default", f"cuDNN's outputs differ by {worst_error:.1e} (> {MAX_REL_ERROR:.0e})"
    if cudnn > default * (1 - MIN_GAIN):
        return "default", f"cuDNN {cudnn:.1f} ms/step is not {MIN_GAIN:.0%} faster than the default's {default:.1f}"
    return "cudnn", f"cuDNN {cudnn:.1f} ms/step against the default's {default:.1f}"


def _compile_failure(shape: AttentionShape, device: str, dtype) -> str | None:
    """Why cuDNN attention fails inside torch.compile, or None when it works there."""
    import torch
    import torch.nn.functional as F

    def attend(q, k, v):  # a Python function: dynamo traces it (a bare builtin may just run eagerly)
        return F.scaled_dot_product_attention(q, k, v) * 1.0

    q = torch.randn(shape.batch, shape.heads, shape.queries, shape.head_dim, device=device, dtype=dtype)
    try:
        with attention_backends("cudnn"):
            torch.compile(attend, dynamic=False)(q, q, q)
    except Exception as exc:  # any compiler failure means: do not choose cuDNN for a compiled UNet
        return f"cudnn fails under torch.compile on {shape.describe()}: {type(exc).__name__}: " \
               f"{str(exc).splitlines()[0][:200] if str(exc) else ''}"
    return None


def _time(fn, device: str, repeats: int) -> float:
    """Median seconds of `fn` over `repeats` runs (CUDA events on a GPU)."""
    import statistics

    import torch

    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            began = time.perf_counter()
            fn()
            times.append(time.perf_counter() - began)
    return statistics.median(times)
