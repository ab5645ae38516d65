"""The out-of-memory ladder: when a job runs out of GPU memory it is retried one rung down, cheapest
first, and what it took is recorded in its entry."""

from __future__ import annotations

from svdflow.hardware import OFFLOAD_LADDER, ResolvedHardware


def next_rung(hw: ResolvedHardware) -> ResolvedHardware | None:
    """The settings one rung lower, or None at the bottom.

    Cheapest first: decoding alone gives back what a decode beside the next job's UNet holds,
    smaller VAE decode chunks cost little time, running the CFG branches one after the other
    a few percent, offloading the most.
    """
    if hw.overlap_decode:
        return hw.replace(overlap_decode=False)
    if hw.decode_chunk_size is None or hw.decode_chunk_size > 2:
        return hw.replace(decode_chunk_size=2)
    if not hw.forward_chunking:
        return hw.replace(forward_chunking=True)
    if not hw.sequential_cfg:
        return hw.replace(sequential_cfg=True)
    if hw.decode_chunk_size > 1:
        return hw.replace(decode_chunk_size=1)
    if not hw.device.startswith("cuda") or hw.offload == OFFLOAD_LADDER[-1]:
        return None  # offloading moves weights off a GPU; on a CPU or MPS there is nothing lower
    if hw.fp8:
        return None  # FP8 weights sit beside the UNet's: offloading cannot take them (hardware.fp8_conflict)
    return hw.replace(offload=OFFLOAD_LADDER[OFFLOAD_LADDER.index(hw.offload) + 1], compile=False, compile_vae=False)


# Offload hooks and compiled blocks are set up when a pipeline is loaded: changing these means
# loading it again. Feed-forward chunking and sequential CFG switch in place (svdflow.pipeline.apply).
RELOAD_SETTINGS = frozenset({"offload", "compile", "compile_vae", "dtype", "device", "fp8"})


def needs_reload(before: ResolvedHardware, changed: dict) -> bool:
    """Whether stepping down with these changes needs the pipeline loaded again."""
    # A compiled UNet would recompile for a changed forward anyway: load it fresh instead.
    return bool(changed.keys() & RELOAD_SETTINGS) or (
        before.compile and bool(changed.keys() & {"forward_chunking", "sequential_cfg"})) or (
        # Sequential CFG is a hook with its own forward: registered above group offloading's lazy
        # prefetch hook, which removes itself after the first call, diffusers would bypass it from then
        # on. A fresh load registers it beneath the offload hooks (svdflow.pipeline.apply).
        before.offload == "group" and "sequential_cfg" in changed)


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def oom_text(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
