"""The bench's cases: each renders the same video (same image, seed, parameters) with one setting of
svdflow's, or with diffusers' own recipe, and reports its timings, memory and how far its final
latents and frames are from `balanced`'s (eager fp16, every lossless default on).

  balanced            resident, eager: the reference for speed and for the latents and frames
  max-speed           + the UNet's repeated blocks and the VAE decoder compiled (first video compiles)
  eager-vae           max-speed with the VAE decoder eager: what compiling the decoder buys
  draft               max-speed with cfg_until 0.5 and cache_interval 3 (lossy; the batch-1 graphs
                      compile on its first video)
  fp8                 max-speed with FP8 matmuls (near-lossless; compiles its own graphs)
  low-vram            group offload on CUDA streams + feed-forward chunks + one CFG branch at a time +
                      decode 2
  seed-offload        diffusers' enable_model_cpu_offload + decode_chunk_size 8 (issue #5's seed)
  no-shortcut         balanced without the one-token cross-attention shortcut
  default-attention   balanced with torch's own attention kernel choice instead of the probed one
  decode-one-chunk    balanced's latents decoded in one chunk instead of 8-frame ones (decode only;
                      changes pixels: the VAE's temporal layers mix the frames of a chunk)
  compile-start       (on its own) from a fresh process to the first compiled step; run it twice on
                      one TORCHINDUCTOR_CACHE_DIR for cold and warm
  max-autotune, coordinate-descent
                      (on request) max-speed compiled with inductor's max-autotune-no-cudagraphs, or with
                      coordinate-descent tuning: faster kernels for minutes of compiling
  seed-offload-lowmem, low-vram-batched-cfg, max-speed-fullgraph
                      (on request) the seed with forward chunking and decode 2; low-vram with both CFG
                      branches in one batch; the whole UNet compiled as one graph
"""

from __future__ import annotations

import math
import statistics
import time
import traceback
from collections.abc import Callable
from typing import Any

from svdflow.bench.clock import (
    StepClock,
    call_pipeline,
    compare_latents,
    count_files,
    measure,
    psnr,
    seconds_since_process_start,
)
from svdflow.bench.config import DRAFT, GIB, LATENT_REL_L2_TOL, LOSSY_CASES
from svdflow.bench.state import BenchState, Setup, hardware, with_setup
from svdflow.pipeline.process_state import ProcessChanges

Case = Callable[[BenchState], dict[str, Any]]


def _lossless(state: BenchState, **changes) -> Setup:
    """Every lossless default on (what a resident profile installs), with `changes`."""
    return Setup(attention=state.probe_attention(), **changes)


def _max_speed(state: BenchState, **changes) -> Setup:
    return _lossless(state, **{"compile": True, "compile_vae": state.cuda, **changes})


def _lossy(state: BenchState, **changes) -> Setup:
    """max-speed for a lossy case; on a CPU uncompiled (max-speed already ran the compile path there,
    and dynamo's tracing of another set of graphs would only cost the run time)."""
    return _max_speed(state, **changes) if state.cuda else _lossless(state, **changes)


def _ok(settings: dict[str, Any], out: dict[str, Any], notes: list[str] | None = None) -> dict[str, Any]:
    return {"status": "ok", "settings": settings, **out, **({"notes": notes} if notes else {})}


def _deviation(state: BenchState, name: str, out: dict[str, Any]) -> None:
    """The first video's latents and frames against balanced's, in place of the raw tensors."""
    latents, frames = out.pop("_latents"), out.pop("_frames", None)
    if not state.config.check_latents:
        return
    if state.reference is None:
        out["latents"] = {"skipped": "no balanced (eager) reference in this run; include the balanced case"}
        return
    comparison = compare_latents(latents[0], state.reference)
    if name not in LOSSY_CASES:  # the lossy ones are reported, not judged
        comparison["ok"] = comparison["rel_l2"] <= LATENT_REL_L2_TOL
    out["latents"] = comparison
    _frames_against_reference(out, psnr(frames, state.reference_frames))


def _frames_against_reference(out: dict[str, Any], db: float | None) -> None:
    """PSNR in dB, or identical (JSON has no infinity)."""
    out["frames_identical"] = db == math.inf
    out["frames_psnr_db"] = None if db == math.inf else db


def _run_resident(state: BenchState, name: str, setup: Setup, videos: int, *, profile: str = "balanced",
                  decode_chunk_size: int | None = 8, draft: dict | None = None, kernels: bool = False,
                  changes: ProcessChanges | None = None) -> dict[str, Any]:
    """A resident case: switch the pipeline to `setup`, time `videos` videos, compare with balanced."""
    from svdflow.bench.kernels import kernel_profile

    config = state.config
    counters = _dynamo_counters() if setup.compile else None
    if counters is not None:
        counters.clear()
    pipe = state.resident(setup, changes)
    out = measure(config, pipe, state.image, decode_chunk_size, videos, draft=draft)
    if setup.compile and videos > 1:
        out["compile_s"] = round(out["first_video_s"] - out["s_per_video"], 2)
        out["graph_breaks"] = sum(counters["graph_break"].values())
        out["graphs_compiled"] = counters["stats"].get("unique_graphs", 0)
    if kernels and config.kernels:
        out["kernels"] = kernel_profile(config, pipe, state.image, decode_chunk_size, out["_latents"][-1])
    if name != "balanced":
        _deviation(state, name, out)
    settings = {**hardware(config, profile, setup).to_json(), **(draft or {}), "bench_setup": setup.to_json()}
    return {"settings": settings, **out}


def _variant_videos(state: BenchState) -> int:
    """A setting switched on an already warm pipeline: its first video is steady already."""
    return max(1, state.config.videos - 1)


def _compile_videos(state: BenchState) -> int:
    """The first video compiles; at least one steady one after it (`videos` in all: minutes count)."""
    return max(2, state.config.videos)


def _lossy_note(state: BenchState) -> list[str]:
    return [] if state.cuda else ["uncompiled on a CPU"]


def _compile_note(state: BenchState) -> list[str]:
    if state.cuda:
        return []
    return ["compiled with dynamo's eager backend on a CPU (inductor's C++ build of even the tiny UNet "
            "takes minutes): the code path runs, the time means nothing"]


# ---------------------------------------------------------------------------------------------


def case_balanced(state: BenchState) -> dict[str, Any]:
    setup = _lossless(state)
    out = _run_resident(state, "balanced", setup, state.config.videos, kernels=True)
    latents = out.pop("_latents")
    state.reference, state.reference_frames = latents[0], out.pop("_frames")
    if len(latents) > 1:  # the noise floor: eager against itself (kernel choice may vary between calls)
        out["latents_repeat"] = compare_latents(latents[1], latents[0])
    if state.config.overlap:
        out["overlap"] = _try_overlapped(state, state.pipe, 8, out["s_per_video"])
    out["attention_probe"] = state.attention_probe
    return _ok(out.pop("settings"), out)


def case_max_speed(state: BenchState) -> dict[str, Any]:
    from svdflow.pipeline.compile import configure_compile_cache

    cache = configure_compile_cache(state.changes) if state.cuda else None
    files_before = count_files(cache)
    out = _run_resident(state, "max-speed", _max_speed(state), _compile_videos(state), profile="max-speed",
                        kernels=True)
    if cache:
        out["inductor_cache"] = {"dir": cache, "files_before": files_before, "files_after": count_files(cache)}
    if state.config.overlap:  # the compiled pipeline as it is: its decodes overlapped
        out["overlap"] = _try_overlapped(state, state.pipe, 8, out["s_per_video"])
    return _ok(out.pop("settings"), out, _compile_note(state))


def case_eager_vae(state: BenchState) -> dict[str, Any]:
    # Right after max-speed the UNet's graphs are warm: only the decoder goes back to eager.
    videos = _variant_videos(state) if state.setup == _max_speed(state) else _compile_videos(state)
    out = _run_resident(state, "eager-vae", _max_speed(state, compile_vae=False), videos, profile="max-speed")
    return _ok(out.pop("settings"), out, _compile_note(state))


def case_draft(state: BenchState) -> dict[str, Any]:
    out = _run_resident(state, "draft", _lossy(state), _compile_videos(state), profile="max-speed", draft=DRAFT)
    return _ok(out.pop("settings"), out, _lossy_note(state))


def case_fp8(state: BenchState) -> dict[str, Any]:
    notes = _lossy_note(state)
    if not state.cuda:
        notes.append("FP8 matmuls on a CPU (torch runs them there; svdflow refuses fp8 off a GPU of compute "
                     "capability 8.9+): exercises the hooks")
    elif (capability := _capability(state)) < (8, 9):
        return {"status": "skipped", "reason": f"FP8 needs compute capability 8.9+, this GPU has "
                                               f"{capability[0]}.{capability[1]}"}
    out = _run_resident(state, "fp8", _lossy(state, fp8=True), _compile_videos(state), profile="max-speed")
    return _ok(out.pop("settings"), out, notes)


def case_no_shortcut(state: BenchState) -> dict[str, Any]:
    out = _run_resident(state, "no-shortcut", _lossless(state, shortcut=False), _variant_videos(state))
    return _ok(out.pop("settings"), out)


def case_default_attention(state: BenchState) -> dict[str, Any]:
    out = _run_resident(state, "default-attention", Setup(), _variant_videos(state))
    return _ok(out.pop("settings"), out)


def case_decode_one_chunk(state: BenchState) -> dict[str, Any]:
    """Balanced's final latents decoded in 8-frame chunks (as balanced) and in one: time, peak, pixels."""
    import torch

    from svdflow.pipeline.render import decode_frames

    if state.reference is None:
        return {"status": "skipped", "reason": "decodes balanced's latents; include the balanced case before it"}
    config = state.config
    pipe = state.resident(_lossless(state))
    latents = state.reference.to(pipe.vae.device, pipe.vae.dtype)
    out: dict[str, Any] = {}
    for name, chunk in (("chunks_of_8", 8), ("one_chunk", None)):
        if config.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(config.device)
        began = time.perf_counter()
        frames = decode_frames(pipe, latents, config.num_frames, chunk)
        out[name] = {"decode_s": round(time.perf_counter() - began, 3),
                     "peak_gib": round(torch.cuda.max_memory_allocated(config.device) / GIB, 2)
                     if config.cuda else None}
        _frames_against_reference(out[name], psnr(frames, state.reference_frames))
    one = out["one_chunk"]
    out.update(post_loop_s=one["decode_s"], peak_gib=one["peak_gib"])
    _frames_against_reference(out, psnr(frames, state.reference_frames))
    settings = {**hardware(config, "balanced", _lossless(state), decode_chunk_size=None).to_json()}
    return _ok(settings, out, ["decode only (s/video: balanced's, less its decode, plus this one)"])


def case_low_vram(state: BenchState, **overrides) -> dict[str, Any]:
    from svdflow.pipeline.apply import apply_hardware

    notes = []
    if not state.cuda:
        notes.append("group offload onto the CPU itself: exercises the hooks, saves nothing")
    # Group offload streams from CPU memory: start from weights on the CPU.
    pipe = state.fresh("cpu")
    state.setup = None  # offload hooks: not switchable
    hw = hardware(state.config, "low-vram", _lossless(state), **overrides)
    apply_hardware(pipe, hw, state.changes)
    out = measure(state.config, pipe, state.image, hw.decode_chunk_size, state.config.videos)
    _deviation(state, "low-vram", out)
    return _ok(hw.to_json(), out, notes)


def case_seed(state: BenchState, *, lowmem: bool) -> dict[str, Any]:
    """diffusers as a user runs it: no svdflow hook, PyTorch's default kernel flags (no TF32 for the
    float32 encode)."""
    import torch

    if not state.cuda:
        return {"status": "skipped", "reason": "enable_model_cpu_offload moves models to an accelerator and back; "
                                               "there is none on this machine"}
    defaults = ProcessChanges()
    defaults.call(torch.set_float32_matmul_precision, torch.get_float32_matmul_precision, "highest")
    try:
        if not (lowmem and state.seed_offload):
            state.fresh("cpu").enable_model_cpu_offload(device=state.config.device)
            state.setup, state.seed_offload = None, True
        pipe = state.pipe
        decode = 2 if lowmem else 8
        if lowmem:
            pipe.unet.enable_forward_chunking()
        out = measure(state.config, pipe, state.image, decode, state.config.videos)
        _deviation(state, "seed-offload", out)
    finally:
        defaults.restore()
    settings = {"offload": "model", "forward_chunking": lowmem, "decode_chunk_size": decode,
                "recipe": "pipe.enable_model_cpu_offload()" + ("; pipe.unet.enable_forward_chunking()" if lowmem else "")}
    return _ok(settings, out)


def case_compile_start(state: BenchState) -> dict[str, Any]:
    """From a fresh process to the first compiled step: run twice on one cache for cold and warm."""
    from svdflow.pipeline.compile import configure_compile_cache

    if not state.cuda:
        return {"status": "skipped", "reason": "compile is measured on CUDA only"}
    cache = configure_compile_cache(state.changes)
    files_before = count_files(cache)
    state.fresh(state.config.device)
    build_s = state.build_s
    setup = _max_speed(state)
    pipe = state.resident(setup)
    since_start = seconds_since_process_start()
    with StepClock(pipe, state.cuda) as clock:
        clock.start()
        call_pipeline(pipe, state.config, state.image, decode_chunk_size=None, steps=min(3, state.config.steps),
                      clock=clock, latent=True)
    steps, pre_loop = clock.step_times(), clock.pre_loop_s()
    step = statistics.median(steps[1:]) if len(steps) > 1 else None
    return _ok(hardware(state.config, "max-speed", setup).to_json(), {
        "cache": {"dir": cache, "files_before": files_before, "files_after": count_files(cache),
                  "warm": files_before > 0},
        "build_s": build_s, "first_step_s": round(steps[0], 3), "unet_step_s": round(step, 4) if step else None,
        "compile_start_s": round(steps[0] - (step or 0), 2),
        "process_to_first_step_s": round(since_start + pre_loop + steps[0], 2) if since_start else None})


def case_tuned(state: BenchState, *, mode: str = "default", coordinate_descent: bool = False) -> dict[str, Any]:
    """max-speed compiled with a tuning mode: its compile time against what it saves per video. Its
    process-wide inductor settings are put back after it, and the graphs dropped."""
    if not state.cuda:
        return {"status": "skipped", "reason": "inductor's tuning modes are measured on CUDA only"}
    changes = ProcessChanges()
    try:
        setup = _max_speed(state, mode=mode, coordinate_descent=coordinate_descent)
        name = "coordinate-descent" if coordinate_descent else "max-autotune"
        out = _run_resident(state, name, setup, _compile_videos(state), profile="max-speed", changes=changes)
    finally:
        state.discard()  # a tuned graph must not serve a later case
        import torch._dynamo

        torch._dynamo.reset()
        changes.restore()
    return _ok(out.pop("settings"), out)


def case_fullgraph(state: BenchState) -> dict[str, Any]:
    """The pre-regional recipe: the whole UNet compiled as one graph (it cannot come off: built anew after)."""
    import torch._dynamo

    from svdflow.pipeline.compile import compile_unet

    if not state.cuda:
        return {"status": "skipped", "reason": "the whole-UNet compile is measured on CUDA only"}
    try:
        setup = _lossless(state)
        pipe = state.resident(setup)
        state.setup = None
        compile_unet(pipe, state.changes, regional=False)
        out = measure(state.config, pipe, state.image, 8, _compile_videos(state))
        out["compile_s"] = round(out["first_video_s"] - out["s_per_video"], 2)
        _deviation(state, "max-speed-fullgraph", out)
    finally:
        state.discard()
        torch._dynamo.reset()
    return _ok({**hardware(state.config, "max-speed", with_setup(setup, compile=True)).to_json(),
                "compile_regional": False}, out)


def _try_overlapped(state: BenchState, pipe, decode_chunk_size, plain_s_per_video: float) -> dict[str, Any]:
    from svdflow.bench.overlap import overlapped

    try:
        return overlapped(state.config, pipe, state.image, decode_chunk_size, plain_s_per_video)
    except Exception as exc:  # an option of the case: it must not cost the case its own timings
        return {"error": f"{type(exc).__name__}: {exc}"[:500], "traceback": traceback.format_exc()[-2000:]}


def _capability(state: BenchState) -> tuple[int, int]:
    import torch

    return tuple(torch.cuda.get_device_capability(state.config.device))


def _dynamo_counters():
    import torch._dynamo.utils

    return torch._dynamo.utils.counters


CASES: dict[str, Case] = {
    "balanced": case_balanced,
    "max-speed": case_max_speed,
    "eager-vae": case_eager_vae,
    "draft": case_draft,
    "fp8": case_fp8,
    "low-vram": case_low_vram,
    "seed-offload": lambda state: case_seed(state, lowmem=False),
    "no-shortcut": case_no_shortcut,
    "default-attention": case_default_attention,
    "decode-one-chunk": case_decode_one_chunk,
    "compile-start": case_compile_start,
    "max-autotune": lambda state: case_tuned(state, mode="max-autotune-no-cudagraphs"),
    "coordinate-descent": lambda state: case_tuned(state, coordinate_descent=True),
    "seed-offload-lowmem": lambda state: case_seed(state, lowmem=True),
    "low-vram-batched-cfg": lambda state: case_low_vram(state, sequential_cfg=False),
    "max-speed-fullgraph": case_fullgraph,
}
