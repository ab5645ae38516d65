"""`svdflow bench`: every hardware profile against diffusers' own recipe, timed in one process.

The pipeline is SVD or SVD-XT built from its configs with random weights (no download; the same
shapes, FLOPs and memory as the checkpoints), or `builtin:tiny`. Cases:

  balanced             resident, eager: the reference for speed and for the final latents
  max-speed            resident, regionally torch.compile'd UNet (first video compiles; the rest
                       are steady)
  low-vram             layer-by-layer group offload on CUDA streams + feed-forward chunks + one CFG
                       branch at a time + decode 2
  seed-offload         diffusers' enable_model_cpu_offload + decode_chunk_size 8 (issue #5's seed)
  seed-offload-lowmem  the same + forward chunking + decode_chunk_size 2
  compile-start        (run on its own) how long a fresh process takes to its first compiled step;
                       run it twice on one TORCHINDUCTOR_CACHE_DIR for cold and warm
  low-vram-batched-cfg (on request) low-vram with both CFG branches in one UNet batch
  max-speed-fullgraph  (on request) max-speed with the whole UNet compiled as one graph, the
                       pre-regional recipe, for comparison

For each: steady seconds per video (the videos after the first) split into before the denoising
loop (CLIP, VAE encode), the loop and after it (VAE decode, uint8 frames on the host), the
denoising step time (CUDA events around every step, mostly the UNet), peak GPU memory of the
steady videos (and of the first apart; split the same way before, in and after the loop), and, for max-speed and the low-vram cases, how far their
final latents are from balanced's (same seed, same image). balanced and max-speed also render
three videos with overlap_decode (each decode during the next video's steps) and report that
s/video, its peak and whether the frames are byte-identical to a plain decode. With --kernels,
they add where the time of two steps and of one decode goes. On a CPU the sizes default to tiny
ones so the whole thing runs in seconds; nothing is encoded to video files.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from svdflow.errors import UsageError
from svdflow.pipeline.process_state import ProcessChanges

CASE_ORDER = ("balanced", "max-speed", "low-vram", "seed-offload", "seed-offload-lowmem")
# Not in the default list: compile-start means something only in a fresh process; the others are
# comparisons: low-vram with both CFG branches in one batch (faster, more memory) and the whole-UNet
# compile (minutes of compiling).
SEPARATE_CASES = ("compile-start", "low-vram-batched-cfg", "max-speed-fullgraph")
ALL_CASES = CASE_ORDER + SEPARATE_CASES
SEED = 20240501

# Final latents of max-speed / low-vram against eager fp16 (balanced), as ||a - b|| / ||b||.
# fp16 has a unit roundoff of 2^-11 ~ 4.9e-4; a compiled graph (fused, re-associated reductions)
# or a batch-1 UNet call (other GEMM tilings) changes each step's output by ~1e-3 relative, and 25
# Euler steps accumulate that (the step is a contraction but each adds its own rounding), so ~1e-3
# to a few 1e-3 is expected. 1e-2 leaves room for that and still fails anything really different:
# a swapped CFG branch, a missing term or a wrong timestep changes the latents by O(1).
LATENT_REL_L2_TOL = 1e-2

TARGETS = {"max_speed_s_per_video": 8.0, "speedup_vs_seed": 2.5, "low_vram_peak_gib": 6.0,
           "low_vram_vs_balanced": 1.3, "warm_compile_start_s": 20.0}

_SIZES = {  # (num_frames, height, width, steps)
    "xt": (25, 576, 1024, 25),
    "svd": (14, 576, 1024, 25),
    "tiny": (4, 64, 64, 3),
}
_CPU_SIZE = (2, 64, 64, 2)  # any variant on a CPU: enough to run every code path in seconds
GIB = 1024**3


@dataclass
class BenchConfig:
    variant: str
    device: str
    dtype: str
    num_frames: int
    height: int
    width: int
    steps: int
    videos: int
    check_latents: bool
    kernels: bool
    deadline_s: float | None


def run_bench(variant: str | None = None, profiles: Sequence[str] | None = None, videos: int | None = None,
              steps: int | None = None, frames: int | None = None, height: int | None = None,
              width: int | None = None, device: str = "auto", check_latents: bool = True,
              json_path: str | os.PathLike[str] | None = None, kernels: bool = False,
              deadline_s: float | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the cases in `profiles` (default: all of CASE_ORDER) and return the results.

    `variant`: "xt", "svd" or "tiny" (default: xt on CUDA, tiny elsewhere). Sizes default to the
    variant's full size on CUDA and to a tiny size on a CPU. The JSON at `json_path` is rewritten
    after every case, so a run cut short keeps what it measured. `deadline_s` skips the cases that
    would start after that many seconds. `kernels` adds to balanced and max-speed where the time of a
    2-step call and of one VAE decode goes (CUDA kernels; CPU operators on a CPU).
    """
    log = log or (lambda _text: None)
    started = time.perf_counter()
    config = _config(variant, device, videos, steps, frames, height, width, check_latents, kernels, deadline_s)
    cases = _cases(profiles)
    result: dict[str, Any] = {
        "svdflow_bench": 1,
        "config": asdict(config),
        "environment": _environment(config.device),
        "tolerance": {"latents_rel_l2": LATENT_REL_L2_TOL,
                      "why": "fp16 re-association ~1e-3 relative per step, accumulated over the steps; "
                             "real errors (wrong CFG branch, missing term) are O(1)"},
        "cases": {},
        "targets": [],
    }
    log(f"bench: {config.variant} {config.num_frames}x{config.height}x{config.width}, {config.steps} steps, "
        f"{config.dtype} on {config.device}; cases: {', '.join(cases)}")
    state = _State(config)
    try:
        for name in cases:
            elapsed = time.perf_counter() - started
            if config.deadline_s is not None and elapsed > config.deadline_s:
                outcome = {"status": "skipped", "reason": f"deadline: {elapsed:.0f} s > {config.deadline_s:.0f} s"}
            else:
                log(f"bench: {name} ...")
                try:
                    outcome = _CASES[name](state)
                except Exception as exc:  # one failing case must not lose the others
                    outcome = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000],
                               "traceback": traceback.format_exc()[-4000:]}
                    state.discard()
            result["cases"][name] = outcome
            result["targets"] = _targets(result)
            result["elapsed_s"] = round(time.perf_counter() - started, 2)
            _write_json(json_path, result)
            log(f"bench: {name}: {_summary(outcome)}")
    finally:
        state.discard()  # frees the GPU's cached memory too
        state.changes.restore()
    return result


def _config(variant, device, videos, steps, frames, height, width, check_latents, kernels, deadline_s) -> BenchConfig:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: this machine has no CUDA device; use --device cpu or auto")
    if device.startswith("cuda") and ":" not in device:
        device = f"cuda:{torch.cuda.current_device()}"
    variant = variant or ("xt" if device.startswith("cuda") else "tiny")
    if variant not in _SIZES:
        raise UsageError(f"--variant {variant}: not one of {', '.join(_SIZES)}")
    size = _SIZES[variant] if device.startswith("cuda") else _CPU_SIZE if variant != "tiny" else _SIZES["tiny"]
    return BenchConfig(variant=variant, device=device, dtype="float16" if device.startswith("cuda") else "float32",
                       num_frames=frames or size[0], height=height or size[1], width=width or size[2],
                       steps=steps or size[3], videos=max(1, videos or 2), check_latents=check_latents,
                       kernels=kernels, deadline_s=deadline_s)


def _cases(profiles: Sequence[str] | None) -> list[str]:
    wanted = list(profiles) if profiles else list(CASE_ORDER)
    unknown = [p for p in wanted if p not in ALL_CASES]
    if unknown:
        raise UsageError(f"unknown bench case{'s' * (len(unknown) > 1)} {', '.join(unknown)}; "
                         f"choose from {', '.join(ALL_CASES)}")
    # In the order asked (a run that may be cut short puts what matters most first); by default the
    # resident cases first, which share one pipeline, while offloaded ones each build their own.
    return list(dict.fromkeys(wanted))


def _environment(device: str) -> dict[str, Any]:
    import diffusers
    import torch

    env = {"torch": torch.__version__, "diffusers": diffusers.__version__, "python": platform.python_version(),
           "device": device, "inductor_cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR")}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / GIB, 1), cuda=torch.version.cuda)
    else:
        env.update(cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return env


# ---------------------------------------------------------------------------------------------
# Pipelines: one resident pipeline reused while nothing was installed on it; a fresh one per
# offloaded case (offload hooks do not come off cleanly).


class _State:
    def __init__(self, config: BenchConfig):
        self.config = config
        self.cuda = config.device.startswith("cuda")
        self.pipe = None
        self.clean = False  # nothing installed on self.pipe: no hooks, no compiled wrapper
        self.where: str | None = None
        self.reference = None  # balanced's final latents
        self.seed_offload = False  # self.pipe carries seed-offload's hooks (seed-offload-lowmem reuses it)
        self.build_s: float | None = None
        self.image = _test_image(config.width, config.height)
        self.changes = ProcessChanges()  # process-wide settings the cases change; restored at the end

    def pipeline(self, where: str):
        """A clean pipeline with its weights on `where` (the device, or "cpu" for offloading)."""
        if self.pipe is not None and self.clean and self.where == where:
            return self.pipe
        self.discard()
        started = time.perf_counter()
        # Always drawn on the benchmark's device, then moved: the random weights then do not depend
        # on where a case keeps them (a CPU draw differs), so every case's latents are comparable.
        self.pipe = _build(self.config)
        if where != self.config.device:
            self.pipe.to(where)
        self.where, self.clean = where, True
        self.build_s = round(time.perf_counter() - started, 2)
        return self.pipe

    def discard(self) -> None:
        import torch

        self.pipe, self.clean, self.where, self.seed_offload = None, False, None, False
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _build(config: BenchConfig):
    """The bench's pipeline, its weights drawn on the bench's device."""
    from svdflow.pipeline.device import torch_dtype

    dtype = torch_dtype(config.dtype)
    if config.variant == "tiny":
        from svdflow.pipeline.tiny import build_tiny_pipeline

        pipe = build_tiny_pipeline(dtype).to(config.device)
    else:
        from svdflow.pipeline.tiny import build_full_size_pipeline

        pipe = build_full_size_pipeline(config.variant, dtype=dtype, device=config.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _test_image(width: int, height: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    pixels = (0.5 * x + 0.3 * y + 60 * rng.random((height, width, 3))).clip(0, 255).astype("uint8")
    return Image.fromarray(pixels)


def _hardware(state: _State, profile: str, **overrides):
    from svdflow.hardware import PROFILE_SETTINGS, ResolvedHardware

    settings = {**PROFILE_SETTINGS[profile], **overrides}
    return ResolvedHardware(profile=profile, device=state.config.device, dtype=state.config.dtype,
                            offload=settings["offload"], forward_chunking=settings["forward_chunking"],
                            decode_chunk_size=settings["decode_chunk_size"], compile=settings["compile"] is True,
                            reason="bench", sequential_cfg=settings["sequential_cfg"])


# ---------------------------------------------------------------------------------------------
# Cases


def _case_balanced(state: _State) -> dict[str, Any]:
    from svdflow.pipeline.apply import apply_hardware

    pipe = state.pipeline(state.config.device)
    hw = _hardware(state, "balanced")
    apply_hardware(pipe, hw, state.changes)
    out = _measure(state, pipe, hw.decode_chunk_size, state.config.videos, kernels=True)
    latents = out.pop("_latents")
    state.reference = latents[0]
    if len(latents) > 1:  # the noise floor: eager against itself (kernel choice may vary between calls)
        out["latents_repeat"] = _compare(latents[1], latents[0])
    out["overlap"] = _try_overlapped(state, pipe, hw.decode_chunk_size, out["s_per_video"])
    return {"status": "ok", "settings": hw.to_json(), **out}


def _try_overlapped(state: _State, pipe, decode_chunk_size, plain_s_per_video: float) -> dict[str, Any]:
    try:
        return _overlapped(state, pipe, decode_chunk_size, plain_s_per_video)
    except Exception as exc:  # an option of the case: it must not cost the case its own timings
        return {"error": f"{type(exc).__name__}: {exc}"[:500], "traceback": traceback.format_exc()[-2000:]}


OVERLAP_VIDEOS = 3  # the second period (2nd call start -> 3rd) is the first with a decode inside


def _overlapped(state: _State, pipe, decode_chunk_size, plain_s_per_video: float) -> dict[str, Any]:
    """Videos rendered as a run with overlap_decode renders them: each video's VAE decode queued on
    a side stream from the next video's first step (svdflow.pipeline.overlap), the frames handed
    over when they are on the host.

    s_per_video is the steady period from one call's start to the next: one video's denoising
    with the previous video's decode inside it. The first video's frames are compared with a plain
    decode of the same latents: the side stream must not change a byte.
    """
    import numpy as np
    import torch

    from svdflow.pipeline.overlap import DeferredDecode
    from svdflow.pipeline.render import decode_frames, denoise_latents

    config = state.config
    params = _params(config, config.steps)
    pending: DeferredDecode | None = None
    frames, starts, first_latents = [], [], None

    def step(_done: int, _total: int) -> None:
        nonlocal pending
        if pending is not None:
            pending.launch()
            if pending.ready():
                frames.append(pending.result())
                pending = None

    if state.cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(config.device)
    for _ in range(OVERLAP_VIDEOS):
        if state.cuda:
            # Periods from an idle GPU to an idle GPU, as _measure's videos are timed. Nothing of the
            # overlap is lost: the previous decode is only launched at this call's first step.
            torch.cuda.synchronize()
        starts.append(time.perf_counter())
        latents = denoise_latents(pipe, state.image, params, on_step=step)
        if pending is not None:
            frames.append(pending.result())
        first_latents = latents if first_latents is None else first_latents
        pending = DeferredDecode(lambda: pipe, latents, config.num_frames, decode_chunk_size)
    frames.append(pending.result())
    ended = time.perf_counter()
    periods = [b - a for a, b in zip(starts[1:], starts[2:])]
    out = {"videos": OVERLAP_VIDEOS, "s_per_video": round(statistics.fmean(periods), 3),
           "plain_s_per_video": round(plain_s_per_video, 3),
           "saved_s_per_video": round(plain_s_per_video - statistics.fmean(periods), 3),
           "total_s": round(ended - starts[0], 3), "peak_gib": None}
    if state.cuda:
        out["peak_gib"] = round(torch.cuda.max_memory_allocated(config.device) / GIB, 2)
        out["reserved_gib"] = round(torch.cuda.max_memory_reserved(config.device) / GIB, 2)
    out["frames_identical"] = bool(np.array_equal(
        frames[0], decode_frames(pipe, first_latents, config.num_frames, decode_chunk_size)))
    return out


def _case_max_speed(state: _State, *, regional: bool = True) -> dict[str, Any]:
    import torch

    from svdflow.pipeline.apply import apply_hardware
    from svdflow.pipeline.compile import compile_unet, configure_compile_cache
    from svdflow.pipeline.hooks.regional_compile import remove_regional_compile

    notes = []
    pipe = state.pipeline(state.config.device)
    hw = _hardware(state, "max-speed", compile=state.cuda)
    if not state.cuda:
        notes.append("compile skipped on a CPU: inductor's C++ build of even the tiny UNet takes minutes; "
                     "this case then equals balanced")
    cache = configure_compile_cache(state.changes) if hw.compile else None
    cache_files_before = _count_files(cache) if cache else None
    counters = _dynamo_counters() if hw.compile else None
    if counters is not None:
        counters.clear()
    state.clean = False
    try:
        apply_hardware(pipe, hw.replace(compile=False), state.changes)
        if hw.compile:
            compile_unet(pipe, state.changes, regional=regional)
        videos = state.config.videos + (1 if hw.compile else 0)  # the first one compiles
        out = _measure(state, pipe, hw.decode_chunk_size, videos, kernels=True)
        if hw.compile:
            out["compile_s"] = round(out["first_video_s"] - out["s_per_video"], 2) if videos > 1 else None
            out["compile_start_s"] = round(out["first_step_s"] - out["unet_step_s"], 2)
            out["graph_breaks"] = sum(counters["graph_break"].values())
            out["graphs_compiled"] = counters["stats"].get("unique_graphs", 0)
            out["inductor_cache"] = {"dir": cache, "files_before": cache_files_before,
                                     "files_after": _count_files(cache)}
        _check_latents(state, out)
        if regional:  # the compiled UNet as it is: its decodes overlapped
            out["overlap"] = _try_overlapped(state, pipe, hw.decode_chunk_size, out["s_per_video"])
    finally:
        remove_regional_compile(pipe.unet)
        if hw.compile:
            torch._dynamo.reset()  # drop the compiled graphs (and their hold on the weights)
        # Regional compilation comes off with its hooks; a whole-graph compile does not: build anew.
        state.clean = regional or not hw.compile
    settings = {**hw.to_json(), "compile_regional": regional if hw.compile else None}
    return {"status": "ok", "settings": settings, **out, **({"notes": notes} if notes else {})}


def _case_low_vram(state: _State, **overrides) -> dict[str, Any]:
    from svdflow.pipeline.apply import apply_hardware

    notes = []
    if not state.cuda:
        notes.append("group offload onto the CPU itself: exercises the hooks, saves nothing")
    # Group offload streams from CPU memory: start from weights on the CPU.
    pipe = state.pipeline("cpu")
    state.clean = False  # hooks are about to go on
    hw = _hardware(state, "low-vram", **overrides)
    apply_hardware(pipe, hw, state.changes)
    out = _measure(state, pipe, hw.decode_chunk_size, state.config.videos)
    _check_latents(state, out)
    return {"status": "ok", "settings": hw.to_json(), **out, **({"notes": notes} if notes else {})}


def _case_seed(state: _State, *, lowmem: bool) -> dict[str, Any]:
    import torch

    from svdflow.pipeline.process_state import ProcessChanges

    if not state.cuda:
        return {"status": "skipped", "reason": "enable_model_cpu_offload moves models to an accelerator and back; "
                                               "there is none on this machine"}
    # diffusers as a user runs it: PyTorch's default kernel flags (no TF32 for the float32 encode).
    defaults = ProcessChanges()
    defaults.call(torch.set_float32_matmul_precision, torch.get_float32_matmul_precision, "highest")
    try:
        if not (lowmem and state.seed_offload):
            state.pipeline("cpu").enable_model_cpu_offload(device=state.config.device)
            state.clean, state.seed_offload = False, True
        pipe = state.pipe
        decode = 2 if lowmem else 8
        if lowmem:
            pipe.unet.enable_forward_chunking()
        out = _measure(state, pipe, decode, state.config.videos)
        out.pop("_latents", None)
    finally:
        defaults.restore()
    settings = {"offload": "model", "forward_chunking": lowmem, "decode_chunk_size": decode,
                "recipe": "pipe.enable_model_cpu_offload()" + ("; pipe.unet.enable_forward_chunking()" if lowmem else "")}
    return {"status": "ok", "settings": settings, **out}


def _case_compile_start(state: _State) -> dict[str, Any]:
    """From a fresh process to the first compiled step: run twice on one cache for cold and warm."""
    from svdflow.pipeline.apply import apply_hardware
    from svdflow.pipeline.compile import configure_compile_cache

    if not state.cuda:
        return {"status": "skipped", "reason": "compile is measured on CUDA only"}
    cache = configure_compile_cache(state.changes)
    files_before = _count_files(cache)
    pipe = state.pipeline(state.config.device)
    build_s = state.build_s
    state.clean = False
    hw = _hardware(state, "max-speed", compile=True)
    apply_hardware(pipe, hw, state.changes)
    since_start = _seconds_since_process_start()
    with _StepClock(pipe, state.cuda) as clock:
        clock.start()
        _call(pipe, state, decode_chunk_size=None, steps=min(3, state.config.steps), clock=clock, latent=True)
    steps, pre_loop = clock.step_times(), clock.pre_loop_s()
    step = statistics.median(steps[1:]) if len(steps) > 1 else None
    return {"status": "ok", "settings": hw.to_json(),
            "cache": {"dir": cache, "files_before": files_before, "files_after": _count_files(cache),
                      "warm": files_before > 0},
            "build_s": build_s, "first_step_s": round(steps[0], 3),
            "unet_step_s": round(step, 4) if step else None,
            "compile_start_s": round(steps[0] - (step or 0), 2),
            "process_to_first_step_s": round(since_start + pre_loop + steps[0], 2) if since_start else None}


_CASES: dict[str, Callable[[_State], dict[str, Any]]] = {
    "balanced": _case_balanced,
    "max-speed": _case_max_speed,
    "max-speed-fullgraph": lambda state: _case_max_speed(state, regional=False),
    "low-vram": _case_low_vram,
    "low-vram-batched-cfg": lambda state: _case_low_vram(state, sequential_cfg=False),
    "seed-offload": lambda state: _case_seed(state, lowmem=False),
    "seed-offload-lowmem": lambda state: _case_seed(state, lowmem=True),
    "compile-start": _case_compile_start,
}


# ---------------------------------------------------------------------------------------------
# Measuring


class _StepClock:
    """Marks the call's start, the denoising loop's start (after prepare_latents) and every step's
    end; CUDA events on a GPU (no synchronisation inside the loop), perf_counter on a CPU.

    With `memory_device`, every mark also takes the allocator's peak since the previous mark and
    resets it, so a video's peak splits into before the loop, the loop and after it. The allocator
    counts on the host as kernels are queued, so the split follows the code, whatever the GPU's lag.
    """

    def __init__(self, pipe, cuda: bool, memory_device: str | None = None):
        self.cuda, self.marks, self.latents, self.total = cuda, [], None, 0
        self.memory_device = memory_device if cuda else None
        self.peaks: list[tuple[int, int]] = []  # (allocated, reserved) peak since the mark before
        self.pipe = pipe
        original = pipe.prepare_latents

        def prepare_latents(*args, **kwargs):
            latents = original(*args, **kwargs)
            self._mark()
            return latents

        pipe.prepare_latents = prepare_latents  # on the instance, until the clock is closed

    def __enter__(self) -> _StepClock:
        return self

    def __exit__(self, *exc) -> None:
        self.pipe.__dict__.pop("prepare_latents", None)

    def start(self) -> None:
        """Marks a call's start; _call then sets how many steps it runs."""
        self.marks, self.latents, self.peaks = [], None, []
        self._mark()

    def finish(self) -> None:
        """Marks the call's end: the time after the last step is the VAE decode and postprocessing."""
        self._mark()

    def _mark(self) -> None:
        if self.cuda:
            import torch

            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
            if self.memory_device is not None:
                self.peaks.append((torch.cuda.max_memory_allocated(self.memory_device),
                                   torch.cuda.max_memory_reserved(self.memory_device)))
                torch.cuda.reset_peak_memory_stats(self.memory_device)
        else:
            self.marks.append(time.perf_counter())

    def video_peak(self) -> tuple[int, int]:
        """(allocated, reserved) peak of the call, after finish()."""
        return max(p[0] for p in self.peaks[1:]), max(p[1] for p in self.peaks[1:])

    def phase_peaks(self) -> dict[str, int]:
        """Allocated peak before the loop (CLIP, VAE encode), in it, and after it (decode), after finish()."""
        return {"pre_loop": self.peaks[1][0], "loop": max(p[0] for p in self.peaks[2:self.total + 2]),
                "post_loop": self.peaks[-1][0]}

    def on_step(self, _pipe, step: int, _timestep, callback_kwargs: dict) -> dict:
        self._mark()
        if step == self.total - 1:
            self.latents = callback_kwargs["latents"]  # copied to the host once the video is timed
        return callback_kwargs

    def _seconds(self, a, b) -> float:
        return a.elapsed_time(b) / 1000 if self.cuda else b - a

    def step_times(self) -> list[float]:
        """Seconds of each denoising step (after finish(), the steps only)."""
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        loop = self.marks[1:self.total + 2] if self.total else self.marks[1:]
        return [self._seconds(a, b) for a, b in zip(loop, loop[1:])]

    def post_loop_s(self) -> float:
        return self._seconds(self.marks[self.total + 1], self.marks[-1])

    def pre_loop_s(self) -> float:
        return self._seconds(self.marks[0], self.marks[1])


def _params(config: BenchConfig, steps: int):
    """One video's parameters, as a job's: every case renders the same video."""
    from svdflow.manifest.schema import JobParams

    return JobParams(num_inference_steps=steps, height=config.height, width=config.width,
                     num_frames=config.num_frames, min_guidance_scale=1.0, max_guidance_scale=3.0, fps=7,
                     playback_fps=7.0, motion_bucket_id=127, noise_aug_strength=0.02, seed=SEED)


def _call(pipe, state: _State, *, decode_chunk_size, steps: int, clock: _StepClock, latent: bool = False) -> None:
    import torch

    from svdflow.pipeline.render import make_generator, tensor_to_uint8

    params = _params(state.config, steps).model_dump(
        include={"num_inference_steps", "height", "width", "num_frames", "min_guidance_scale", "max_guidance_scale",
                 "fps", "motion_bucket_id", "noise_aug_strength"})
    seed = SEED
    clock.total = steps
    with torch.inference_mode():
        frames = pipe(state.image, **params, decode_chunk_size=decode_chunk_size, generator=make_generator(seed),
                      output_type="latent" if latent else "pt", callback_on_step_end=clock.on_step).frames
        if not latent:  # as a run does: uint8 frames on the host are the end of a video
            tensor_to_uint8(frames[0])


def _measure(state: _State, pipe, decode_chunk_size, videos: int, *, kernels: bool = False) -> dict[str, Any]:
    import torch

    config = state.config
    gc.collect()
    if state.cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        start_gib = torch.cuda.memory_allocated(config.device) / GIB
    seconds, steps, latents, before, after, peaks, phases = [], [], [], [], [], [], []
    with _StepClock(pipe, state.cuda, memory_device=config.device) as clock:
        for _ in range(videos):
            if state.cuda:  # per video: the first one's transient allocations (autotuning, compiling) apart
                torch.cuda.reset_peak_memory_stats(config.device)
            clock.start()
            began = time.perf_counter()
            _call(pipe, state, decode_chunk_size=decode_chunk_size, steps=config.steps, clock=clock)
            clock.finish()
            if state.cuda:
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - began)
            steps.append(clock.step_times())
            before.append(clock.pre_loop_s())
            after.append(clock.post_loop_s())
            latents.append(clock.latents.detach().float().cpu())  # after the timing: no run copies them
            if state.cuda:
                peaks.append(clock.video_peak())
                phases.append(clock.phase_peaks())
    steady = seconds[1:] or seconds
    steady_steps = [s for video in (steps[1:] or steps) for s in video]
    out: dict[str, Any] = {
        "videos_s": [round(s, 3) for s in seconds],
        "first_video_s": round(seconds[0], 3),
        "s_per_video": round(statistics.fmean(steady), 3),
        "unet_step_s": round(statistics.median(steady_steps), 4),
        "first_step_s": round(steps[0][0], 3),
        # Steady videos: before the loop (CLIP, VAE encode, noise), the loop, after (decode, uint8).
        "pre_loop_s": round(statistics.fmean(before[1:] or before), 3),
        "loop_s": round(statistics.fmean([sum(v) for v in (steps[1:] or steps)]), 3),
        "post_loop_s": round(statistics.fmean(after[1:] or after), 3),
        "peak_gib": None, "reserved_gib": None, "start_gib": None,
    }
    if state.cuda:
        steady_peaks = peaks[1:] or peaks
        out.update(peak_gib=round(max(p[0] for p in steady_peaks) / GIB, 2),
                   reserved_gib=round(max(p[1] for p in steady_peaks) / GIB, 2),
                   first_video_peak_gib=round(peaks[0][0] / GIB, 2), start_gib=round(start_gib, 2),
                   # Where a steady video's peak is reached: what to cut when a target is missed.
                   phase_peak_gib={phase: round(max(p[phase] for p in (phases[1:] or phases)) / GIB, 2)
                                   for phase in ("pre_loop", "loop", "post_loop")})
    else:
        out["max_rss_gib"] = _max_rss_gib()
    if kernels and config.kernels:
        out["kernels"] = _kernel_profile(state, pipe, decode_chunk_size, latents[-1])
    out["_latents"] = latents
    return out


def _check_latents(state: _State, out: dict[str, Any]) -> None:
    latents = out.pop("_latents")
    if not state.config.check_latents:
        return
    if state.reference is None:
        out["latents"] = {"skipped": "no balanced (eager) reference in this run; include the balanced case"}
        return
    comparison = _compare(latents[0], state.reference)
    comparison["ok"] = comparison["rel_l2"] <= LATENT_REL_L2_TOL
    out["latents"] = comparison


def _compare(a, b) -> dict[str, float]:
    diff = (a - b).double()
    b = b.double()
    return {"rel_l2": float(diff.norm() / b.norm().clamp_min(1e-30)),
            "rel_max_abs": float(diff.abs().max() / b.abs().max().clamp_min(1e-30))}


_KERNEL_KINDS = (
    ("attention", ("flash", "fmha", "attention", "attn", "sdpa")),
    ("norm", ("norm", "welford")),
    ("conv", ("conv", "implicit_gemm", "cudnn", "xmma_fprop", "dgrad", "wgrad", "fprop")),
    ("gemm", ("gemm", "cutlass", "cublas", "matmul", "nvjet", "ampere_", "wmma", "addmm", "aten::mm", "bmm")),
    ("triton (fused)", ("triton",)),
    ("copy/layout", ("copy", "cat", "transpose", "permute", "nchw", "nhwc", "memcpy", "memset")),
    ("elementwise", ("elementwise", "vectorized", "unrolled", "reduce")),
)


def _kernel_profile(state: _State, pipe, decode_chunk_size, latents) -> dict[str, Any]:
    """Where the GPU time goes, by kind and top kernels: a 2-step call (CLIP, VAE encode, two UNet
    steps; latents out) and, apart, the VAE decode of one video's final latents."""
    from svdflow.pipeline.render import decode_frames

    def two_steps():
        with _StepClock(pipe, state.cuda) as clock:
            clock.start()
            _call(pipe, state, decode_chunk_size=decode_chunk_size, steps=2, clock=clock, latent=True)

    def decode():
        # A run's decode: the clock's float32 host latents back on the VAE in its dtype, to uint8 frames.
        decode_frames(pipe, latents.to(pipe.vae.device, pipe.vae.dtype), state.config.num_frames, decode_chunk_size)

    out = {}
    for name, work in (("denoise", two_steps), ("decode", decode)):
        try:
            out[name] = _profile_kernels(work, state.cuda)
        except Exception as exc:  # a breakdown is a diagnosis: it must not cost the case its timings
            out[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    return out


def _profile_kernels(work: Callable[[], None], cuda: bool) -> dict[str, Any]:
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


def _dynamo_counters():
    import torch._dynamo.utils

    return torch._dynamo.utils.counters


def _count_files(folder: str | None) -> int:
    if not folder or not os.path.isdir(folder):
        return 0
    return sum(len(files) for _, _, files in os.walk(folder))


def _max_rss_gib() -> float | None:
    try:
        import resource
    except ImportError:
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 2)  # KiB on Linux


def _seconds_since_process_start() -> float | None:
    """Wall seconds since this process started (Linux /proc); None elsewhere."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rpartition(")")[2].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


# ---------------------------------------------------------------------------------------------
# Verdicts, table, JSON


def _ok(case: dict[str, Any] | None) -> bool:
    return bool(case) and case.get("status") == "ok"


def _targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue #5's targets, each with the measured value; they are stated for SVD-XT at full size
    on a GPU, so on anything else they are marked as not applying."""
    config, cases = result["config"], result["cases"]
    applies = config["variant"] == "xt" and config["device"].startswith("cuda") and \
        (config["num_frames"], config["height"], config["width"], config["steps"]) == _SIZES["xt"]
    out = []

    def add(target: str, value, met: bool | None) -> None:
        out.append({"target": target, "value": value, "met": met, "applies": applies})

    ms, bal, lv = cases.get("max-speed"), cases.get("balanced"), cases.get("low-vram")
    seed = cases.get("seed-offload")
    if _ok(ms):
        add(f"max-speed <= {TARGETS['max_speed_s_per_video']} s/video", ms["s_per_video"],
            ms["s_per_video"] <= TARGETS["max_speed_s_per_video"])
        if _ok(seed):
            speedup = round(seed["s_per_video"] / ms["s_per_video"], 2)
            add(f"max-speed >= {TARGETS['speedup_vs_seed']}x faster than seed-offload", speedup,
                speedup >= TARGETS["speedup_vs_seed"])
    for name, case in (("max-speed", ms), ("low-vram", lv)):
        if _ok(case) and "rel_l2" in (case.get("latents") or {}):
            add(f"{name} final latents within rel L2 {LATENT_REL_L2_TOL} of eager fp16", case["latents"]["rel_l2"],
                case["latents"]["ok"])
    if _ok(lv):
        if lv.get("peak_gib") is not None:
            # Every video counts here, the first too: a small GPU must survive it.
            peak = max(lv["peak_gib"], lv.get("first_video_peak_gib") or 0.0)
            add(f"low-vram peak <= {TARGETS['low_vram_peak_gib']} GiB", peak, peak <= TARGETS["low_vram_peak_gib"])
        if _ok(bal):
            ratio = round(lv["s_per_video"] / bal["s_per_video"], 2)
            add(f"low-vram <= {TARGETS['low_vram_vs_balanced']}x balanced's time", ratio,
                ratio <= TARGETS["low_vram_vs_balanced"])
    start = cases.get("compile-start")
    if _ok(start) and start["cache"]["warm"]:
        add(f"warm-cache compile start <= {TARGETS['warm_compile_start_s']} s", start["compile_start_s"],
            start["compile_start_s"] <= TARGETS["warm_compile_start_s"])
    return out


def merge_results(first: dict[str, Any], *others: dict[str, Any]) -> dict[str, Any]:
    """One result from several processes' (e.g. the warm compile-start run), targets recomputed."""
    merged = json.loads(json.dumps(first, default=str))
    for other in others:
        merged["cases"].update(other.get("cases", {}))
    merged["targets"] = _targets(merged)
    return merged


def _summary(case: dict[str, Any]) -> str:
    if case.get("status") != "ok":
        return f"{case.get('status')}: {case.get('reason') or case.get('error')}"
    if "s_per_video" not in case:
        return f"first step {case.get('first_step_s')} s, compile start {case.get('compile_start_s')} s"
    return f"{case['s_per_video']} s/video, step {case['unet_step_s']} s, peak {case.get('peak_gib')} GiB"


def format_table(result: dict[str, Any]) -> str:
    """The human summary: one row per case, then the targets."""
    cases = result["cases"]
    seed = cases.get("seed-offload") if _ok(cases.get("seed-offload")) else None
    header = ("case", "s/video", "vs seed", "step s", "compile s", "peak GiB", "latents rel", "note")
    rows = [header]
    for name, case in cases.items():
        if not _ok(case):
            rows.append((name, "-", "-", "-", "-", "-", "-", f"{case.get('status')}: "
                         f"{(case.get('reason') or case.get('error') or '')[:70]}"))
            continue
        if name == "compile-start":
            rows.append((name, "-", "-", _fmt(case.get("unet_step_s")), _fmt(case.get("compile_start_s")), "-", "-",
                         f"{'warm' if case['cache']['warm'] else 'cold'} cache; first step {case['first_step_s']} s"))
            continue
        speedup = f"{seed['s_per_video'] / case['s_per_video']:.2f}x" if seed else "-"
        latents = case.get("latents") or {}
        rel = _fmt(latents.get("rel_l2"), ".1e") if "rel_l2" in latents else "-"
        if "rel_l2" in latents:
            rel += " ok" if latents["ok"] else " FAIL"
        peak = _fmt(case.get("peak_gib")) if case.get("peak_gib") is not None else \
            f"rss {case['max_rss_gib']}" if case.get("max_rss_gib") is not None else "-"
        note = "; ".join(case.get("notes", []))[:60]
        rows.append((name, _fmt(case["s_per_video"]), speedup, _fmt(case["unet_step_s"], ".4f"),
                     _fmt(case.get("compile_s")), peak, rel, note))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    config = result["config"]
    lines.insert(0, f"svdflow bench: {config['variant']} {config['num_frames']}x{config['height']}x{config['width']}, "
                    f"{config['steps']} steps, {config['dtype']} on {result['environment'].get('gpu') or config['device']}")
    phases = [f"{name} " + "/".join(_fmt(case["phase_peak_gib"][k]) for k in ("pre_loop", "loop", "post_loop"))
              for name, case in cases.items() if case.get("phase_peak_gib")]
    if phases:
        lines.append("peak GiB before the loop/in it/decoding: " + "; ".join(phases))
    for name in ("balanced", "max-speed"):
        overlap = (cases.get(name) or {}).get("overlap") or {}
        if "s_per_video" in overlap:
            lines.append(f"{name} with overlap_decode: {overlap['s_per_video']} s/video (plain "
                         f"{overlap['plain_s_per_video']}, saves {overlap['saved_s_per_video']}), peak "
                         f"{_fmt(overlap['peak_gib'])} GiB, frames identical: {overlap['frames_identical']}")
        elif "error" in overlap:
            lines.append(f"{name} with overlap_decode: failed: {overlap['error'][:200]}")
    for target in result["targets"]:
        verdict = "met" if target["met"] else "NOT met"
        lines.append(f"target: {target['target']}: {target['value']} -> {verdict}"
                     + ("" if target["applies"] else " (stated for SVD-XT full size on a GPU; indicative here)"))
    return "\n".join(lines)


def _fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _write_json(path: str | os.PathLike[str] | None, result: dict[str, Any]) -> None:
    from svdflow.outputs.atomic import atomic_write_bytes

    if path is None:
        return
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_bytes(path, (json.dumps(result, indent=2, default=str) + "\n").encode())
