"""Hardware profiles: from the manifest's `hardware` block to concrete settings, and applying them.

A profile is a set of defaults; any field the manifest sets explicitly wins over it. What was
finally used is recorded in every index entry, so a video can be rendered again the same way.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from svdflow.errors import DeviceError
from svdflow.manifest.schema import Hardware, overlap_conflict
from svdflow.run.engines.torchrun import World

GIB = 1024**3
# Below this much free memory, a resident fp16 SVD-XT at 576x1024x25 does not fit: measured on an
# H200 (benchmarks/results/2026-11-26-h200-main.json), the resident compiled pipeline peaks at
# 13.4 GiB allocated with decode chunks of 8. From the second up, compiled resident runs with room
# for the allocator's cache (26 GiB reserved at most in that run; it gives cached blocks back
# before failing an allocation).
LOW_VRAM_BELOW_GIB = 16
MAX_SPEED_FROM_GIB = 24

# `compile: auto` compiles when the UNet time it saves beats what compiling costs. Measured on an
# H200, SVD-XT at 576x1024x25 with CFG, fp16, in one run: eager 0.640 s/step, regionally compiled
# 0.476 s/step; the cold compile took 69 s, and a fresh process on the warm inductor cache spent
# 10.6 s on its first step beyond a steady one.
REFERENCE_SHAPE = (25, 576, 1024)  # (num_frames, height, width)
COMPILE_SAVES_S_PER_STEP = 0.164
COMPILE_COLD_S = 69.0
COMPILE_WARM_S = 11.0
# ~420 reference steps, ~17 videos of 25 steps: the cold break-even point (warm: ~3 videos).
COMPILE_PAYS_OFF_STEPS = round(COMPILE_COLD_S / COMPILE_SAVES_S_PER_STEP)

# overlap_decode is off in every profile until a GPU run shows what it gains: on one GPU the next
# job's UNet already fills the device, so only its idle moments can hide a decode (see overlap.py).
PROFILE_SETTINGS: dict[str, dict[str, Any]] = {
    "max-speed": {"offload": "none", "forward_chunking": False, "decode_chunk_size": 8, "compile": "auto",
                  "sequential_cfg": False, "overlap_decode": False},
    "balanced": {"offload": "none", "forward_chunking": False, "decode_chunk_size": 8, "compile": "off",
                 "sequential_cfg": False, "overlap_decode": False},
    # Weights are not what fills a GPU here: activations are. Streaming the UNet's weights (group
    # offload) frees ~3 GiB, but the ~6 GiB cut needs the activations down too: feed-forward chunks,
    # one CFG branch at a time (batch 2 -> 1 halves every activation) and 2-frame VAE decodes.
    # Estimated at 576x1024x25 (benchmarks/activation_memory.py, not yet measured on a GPU): a UNet
    # call holds 7.7 GiB unchunked, 4.7 chunked, 2.4 chunked one branch at a time; a decode 9.0 GiB
    # in chunks of 8 frames, 2.25 in chunks of 2.
    "low-vram": {"offload": "group", "forward_chunking": True, "decode_chunk_size": 2, "compile": "off",
                 "sequential_cfg": True, "overlap_decode": False},
    "cpu": {"offload": "none", "forward_chunking": False, "decode_chunk_size": None, "compile": "off",
            "sequential_cfg": False, "overlap_decode": False},
}

# Least memory last. Model offload keeps the whole UNet on the GPU while it denoises; group offload
# streams the UNet and CLIP layer by layer, the next layer copied in on a side stream while one
# computes, the VAE resident; sequential (accelerate's hooks) moves every model's layers in and
# out synchronously, the VAE's too.
OFFLOAD_LADDER = ("none", "model", "group", "sequential")

Shape = tuple[int, int, int]  # (num_frames, height, width): what a compiled UNet specialises on


@dataclass(frozen=True)
class ResolvedHardware:
    """The settings a run actually uses."""

    profile: str
    device: str
    dtype: str
    offload: str
    forward_chunking: bool
    decode_chunk_size: int | None
    compile: bool
    reason: str = ""  # why auto chose what it chose
    sequential_cfg: bool = False  # run CFG's two UNet branches one after the other: half the activations
    # CPU kernels split reductions by thread count, so frames differ between 1 and 2 threads. A fixed
    # count makes CPU frames bit-identical across machines and launchers (None: torch's default).
    cpu_threads: int | None = None
    # Decode each job with the VAE while the next one denoises (svdflow.pipeline.overlap).
    overlap_decode: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def lower_memory(self) -> ResolvedHardware | None:
        """The next rung of the out-of-memory ladder, or None at the bottom.

        Cheapest first: decoding alone gives back what a decode beside the next job's UNet holds,
        smaller VAE decode chunks cost little time, running the CFG branches one after the other
        a few percent, offloading the most.
        """
        if self.overlap_decode:
            return replace(self, overlap_decode=False)
        if self.decode_chunk_size is None or self.decode_chunk_size > 2:
            return replace(self, decode_chunk_size=2)
        if not self.forward_chunking:
            return replace(self, forward_chunking=True)
        if not self.sequential_cfg:
            return replace(self, sequential_cfg=True)
        if self.decode_chunk_size > 1:
            return replace(self, decode_chunk_size=1)
        if not self.device.startswith("cuda") or self.offload == OFFLOAD_LADDER[-1]:
            return None  # offloading moves weights off a GPU; on a CPU or MPS there is nothing lower
        return replace(self, offload=OFFLOAD_LADDER[OFFLOAD_LADDER.index(self.offload) + 1], compile=False)


@dataclass(frozen=True)
class DeviceFacts:
    """What the machine offers; gathered once, passed in so resolution is testable."""

    cuda_count: int
    mps: bool
    free_bytes: dict[str, int]  # per CUDA device name
    names: dict[str, str] = field(default_factory=dict)  # per CUDA device name: "NVIDIA H200"

    @classmethod
    def probe(cls) -> DeviceFacts:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        free, names = {}, {}
        for i in range(count):
            free[f"cuda:{i}"] = torch.cuda.mem_get_info(i)[0]
            names[f"cuda:{i}"] = torch.cuda.get_device_name(i)
        mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
        return cls(count, mps, free, names)


def job_shape(params: Mapping[str, Any]) -> Shape:
    """What a compiled UNet is specialised on (dynamic=False): a new shape means a new compile."""
    return (int(params["num_frames"]), int(params["height"]), int(params["width"]))


def shape_groups(jobs: Iterable[Any]) -> list[tuple[Shape, list[Any]]]:
    """Jobs grouped by shape, groups in order of first appearance, jobs in their order within.

    Rendering group by group compiles each shape once: the UNet is compiled with dynamic=False,
    so alternating shapes would swap graphs (or recompile past dynamo's recompile limit).
    Accepts Job objects (with .params) or parameter dicts.
    """
    groups: dict[Shape, list[Any]] = {}
    for job in jobs:
        groups.setdefault(job_shape(getattr(job, "params", job)), []).append(job)
    return list(groups.items())


def planned_steps_by_shape(jobs: Iterable[Any]) -> dict[Shape, int]:
    return {shape: sum(int(getattr(j, "params", j)["num_inference_steps"]) for j in group)
            for shape, group in shape_groups(jobs)}


def compile_pays_off(planned: int | Mapping[Shape, int], warm: bool | Iterable[Shape] = False) -> tuple[bool, str]:
    """Whether compiling the UNet saves more time than it costs, and why.

    `planned` is UNet steps (at the reference shape) or steps per shape; every shape compiles once.
    Saving per step scales with the shape's pixels x frames. `warm` says which shapes the inductor
    cache already holds (True: all), which makes their compile ~COMPILE_WARM_S instead of cold.
    """
    if isinstance(planned, int):
        planned = {REFERENCE_SHAPE: planned} if planned else {}
    warm_shapes = set(planned) if warm is True else set(warm or ())
    reference_work = REFERENCE_SHAPE[0] * REFERENCE_SHAPE[1] * REFERENCE_SHAPE[2]
    saving = cost = 0.0
    for shape, steps in planned.items():
        saving += steps * COMPILE_SAVES_S_PER_STEP * (shape[0] * shape[1] * shape[2]) / reference_work
        cost += COMPILE_WARM_S if shape in warm_shapes else COMPILE_COLD_S
    cache = "warm" if warm_shapes and warm_shapes >= set(planned) else "cold" if not warm_shapes else "partly warm"
    verdict = saving > cost
    return verdict, (f"compile {'on' if verdict else 'off'}: saves ~{saving:.0f} s over the planned work, "
                     f"costs ~{cost:.0f} s ({len(planned)} shape{'s' * (len(planned) != 1)}, {cache} cache)")


def resolve_hardware(hw: Hardware, facts: DeviceFacts, *, planned_unet_steps: int | Mapping[Shape, int] = 0,
                     compile_cache_warm: bool | Iterable[Shape] = False,
                     env: Mapping[str, str] | None = None) -> ResolvedHardware:
    env = os.environ if env is None else env
    explicit = hw.model_fields_set
    device = _device(hw.device, facts, env)
    profile, reason = hw.profile, "set in the manifest"
    if profile == "auto":
        profile, reason = _auto_profile(device, facts)
    settings = requested_settings(hw, profile)
    dtype = hw.dtype if hw.dtype != "auto" else ("float32" if device == "cpu" else "float16")
    if device == "cpu" and settings["offload"] != "none":
        raise DeviceError(f"hardware.offload: {settings['offload']!r} moves weights to a GPU and back, but the "
                          f"device is cpu; set offload: none")
    if settings["overlap_decode"] and settings["offload"] != "none":  # profile auto chose low-vram
        raise DeviceError("hardware." + overlap_conflict(settings["offload"], None if "offload" in explicit else profile))
    compile_on, why = _compile_decision(settings["compile"], device, planned_unet_steps, compile_cache_warm)
    if why:
        reason = f"{reason}; {why}"
    return ResolvedHardware(profile, device, dtype, settings["offload"], settings["forward_chunking"],
                            settings["decode_chunk_size"], compile_on, reason, settings["sequential_cfg"],
                            cpu_threads=cpu_render_threads(env) if device == "cpu" else None,
                            overlap_decode=settings["overlap_decode"])


def requested_settings(hw: Hardware, profile: str) -> dict[str, Any]:
    """The profile's settings with the fields the manifest sets itself put over them."""
    settings = dict(PROFILE_SETTINGS[profile])
    for name in ("offload", "forward_chunking", "decode_chunk_size", "compile", "overlap_decode"):
        if name in hw.model_fields_set:
            settings[name] = getattr(hw, name)
    return settings


def cpu_render_threads(env) -> int:
    """Threads for CPU renders: SVDFLOW_CPU_THREADS, else 1. One thread is the reproducible choice
    (every machine has it) and CPU renders are for tests and dry runs, where it is fast enough."""
    value = env.get("SVDFLOW_CPU_THREADS", "1")
    if not value.isdigit() or int(value) < 1:
        raise DeviceError(f"SVDFLOW_CPU_THREADS={value!r} is not a positive integer; set it to e.g. 1 or 4, "
                          "or unset it")
    return int(value)


def _device(requested: str, facts: DeviceFacts, env) -> str:
    if requested == "auto":
        if facts.cuda_count:
            # Under a launcher (torchrun, accelerate, MPI, Slurm) each process owns the GPU of its local rank.
            return f"cuda:{World.from_env(env).local_rank % facts.cuda_count}"
        return "mps" if facts.mps else "cpu"
    if requested.startswith("cuda"):
        index = int(requested.partition(":")[2] or 0)
        if index >= facts.cuda_count:
            have = f"{facts.cuda_count} CUDA device{'s' * (facts.cuda_count != 1)}" if facts.cuda_count else "no CUDA device"
            raise DeviceError(f"hardware.device: {requested!r} is not available (this machine has {have}); "
                              "use device: auto or cpu")
        return f"cuda:{index}"
    if requested == "mps" and not facts.mps:
        raise DeviceError("hardware.device: 'mps' is not available on this machine; use device: auto or cpu")
    return requested


def _auto_profile(device: str, facts: DeviceFacts) -> tuple[str, str]:
    if not device.startswith("cuda"):
        return "cpu" if device == "cpu" else "balanced", f"device {device}"
    free_gib = facts.free_bytes.get(device, 0) / GIB
    if free_gib < LOW_VRAM_BELOW_GIB:
        return "low-vram", f"{free_gib:.1f} GiB free on {device} (< {LOW_VRAM_BELOW_GIB})"
    if free_gib < MAX_SPEED_FROM_GIB:
        return "balanced", f"{free_gib:.1f} GiB free on {device}"
    return "max-speed", f"{free_gib:.1f} GiB free on {device} (>= {MAX_SPEED_FROM_GIB})"


def _compile_decision(setting: str, device: str, planned: int | Mapping[Shape, int],
                      warm: bool | Iterable[Shape]) -> tuple[bool, str]:
    if setting == "on":
        return True, ""
    if setting == "off":
        return False, ""
    if not device.startswith("cuda"):
        return False, f"compile off: auto compiles on CUDA only, the device is {device}"
    return compile_pays_off(planned, warm)


def torch_dtype(name: str):
    import torch

    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[name]


# ---------------------------------------------------------------------------------------------
# The inductor cache: kept across runs so that a second run's compile is a cache load.


def inductor_cache_dir(env: Mapping[str, str] | None = None) -> str:
    """The user's TORCHINDUCTOR_CACHE_DIR, else svdflow's own folder under the user cache.

    PyTorch's default lives under /tmp, which many machines wipe at boot: the ~70 s compile
    would then be paid again by every run.
    """
    env = os.environ if env is None else env
    if env.get("TORCHINDUCTOR_CACHE_DIR"):
        return env["TORCHINDUCTOR_CACHE_DIR"]
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "svdflow", "inductor")


def configure_compile_cache(env: dict[str, str] | None = None) -> str:
    """Point inductor's on-disk caches at a stable folder (user settings win); returns the folder."""
    env = os.environ if env is None else env
    folder = inductor_cache_dir(env)
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", folder)
    env.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    env.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    # Compiled Triton kernels belong with the graphs that use them, not in ~/.triton.
    env.setdefault("TRITON_CACHE_DIR", os.path.join(env["TORCHINDUCTOR_CACHE_DIR"], "triton"))
    if env is os.environ:
        import torch._functorch.config as functorch_config
        import torch._inductor.config as inductor_config

        # The config modules read these variables once, when first imported.
        inductor_config.fx_graph_cache = env["TORCHINDUCTOR_FX_GRAPH_CACHE"] == "1"
        functorch_config.enable_autograd_cache = env["TORCHINDUCTOR_AUTOGRAD_CACHE"] == "1"
    return env["TORCHINDUCTOR_CACHE_DIR"]


def compile_marker(model_key: str, dtype: str, device_name: str, shape: Shape,
                   env: Mapping[str, str] | None = None) -> Path:
    """A file that says "this model, dtype, GPU and shape compiled here before": the cache is warm.

    The inductor cache has no cheap query for that; svdflow writes this marker after a compiled
    render succeeds and `compile: auto` reads it.
    """
    import torch

    key = "|".join((model_key, dtype, device_name, "x".join(map(str, shape)), torch.__version__))
    return Path(inductor_cache_dir(env)) / "svdflow-warm" / hashlib.sha256(key.encode()).hexdigest()[:24]


# ---------------------------------------------------------------------------------------------
# Applying settings to a pipeline.


def fast_kernels(enabled: bool = True) -> dict[str, Any]:
    """TF32 for float32 matmuls on (or back to PyTorch's default); returns the previous flags.

    A process-wide flag; it only touches float32 work (the VAE encodes in float32). cuDNN's conv
    autotuning (cudnn.benchmark) is deliberately left off: on an H200 it made the SVD-XT UNet step
    no faster (0.640 s against 0.632 without), cost 12 s on the first video, and its trial
    workspaces pushed the peak allocation to 134 GiB, the whole card.
    """
    import torch

    previous = {"float32_matmul_precision": torch.get_float32_matmul_precision()}
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    return previous


def restore_kernel_flags(previous: Mapping[str, Any]) -> None:
    import torch

    torch.set_float32_matmul_precision(previous["float32_matmul_precision"])


def apply_hardware(pipe, hw: ResolvedHardware):
    """Place and configure the pipeline as `hw` says; returns the same pipeline."""
    import torch

    if pipe.unet.dtype != torch_dtype(hw.dtype):  # diffusers warns on every cast, even a no-op one
        pipe.to(dtype=torch_dtype(hw.dtype))
    if hw.device.startswith("cuda"):
        fast_kernels(True)
    if hw.offload == "none":
        pipe.to(hw.device)
    elif hw.offload == "model":
        pipe.enable_model_cpu_offload(device=hw.device)
    elif hw.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=hw.device)
    elif hw.offload == "group":
        _group_offload(pipe, torch.device(hw.device))
    configure_unet(pipe.unet, hw)
    if hw.compile:
        compile_unet(pipe)
    return pipe


def configure_unet(unet, hw: ResolvedHardware) -> None:
    """The settings that switch in place, without loading the pipeline again."""
    set_forward_chunking(unet, hw.forward_chunking)
    set_sequential_cfg(unet, hw.sequential_cfg)


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


def unwrap_unet(unet):
    """The UNet itself, under a whole-model torch.compile wrapper if there is one."""
    return getattr(unet, "_orig_mod", unet)


def uncompile_unet(unet):
    """The UNet back to eager: regional compilation taken off, a whole-model wrapper unwrapped."""
    module = unwrap_unet(unet)
    for block in module.modules():
        if getattr(block, "_compiled_call_impl", None) is not None:
            block._compiled_call_impl = None
    return module


def set_forward_chunking(unet, enabled: bool) -> None:
    """Feed-forward layers in chunks (spatial blocks frame by frame, temporal ones by frame too),
    or all at once. Unlike diffusers' enable_forward_chunking, this can also switch it off."""
    for module in unwrap_unet(unet).modules():
        if hasattr(module, "set_chunk_feed_forward"):
            module.set_chunk_feed_forward(1 if enabled else None, dim=0)


def set_sequential_cfg(unet, enabled: bool) -> None:
    """Run the UNet once per CFG branch instead of once on the batch of both.

    diffusers' SVD pipeline concatenates the unconditional and conditional latents into a batch of
    2; every activation then has twice the size. Split, the peak halves and the math is the same
    (each sample's result never depended on the other). Installed on the module instance, so it
    works under offload hooks and torch.compile alike; switching off restores the original.
    """
    import torch
    from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionOutput

    module = unwrap_unet(unet)
    installed = "_svdflow_batched_forward" in module.__dict__
    if enabled and not installed:
        batched = module.forward
        had_own = "forward" in module.__dict__

        def forward(sample, timestep, encoder_hidden_states, added_time_ids, return_dict=True):
            if sample.shape[0] < 2:
                return batched(sample, timestep, encoder_hidden_states, added_time_ids, return_dict=return_dict)
            outputs = []
            for i in range(sample.shape[0]):
                t = timestep[i:i + 1] if torch.is_tensor(timestep) and timestep.ndim else timestep
                outputs.append(batched(sample[i:i + 1], t, encoder_hidden_states[i:i + 1],
                                       added_time_ids[i:i + 1], return_dict=False)[0])
            out = torch.cat(outputs)
            return UNetSpatioTemporalConditionOutput(sample=out) if return_dict else (out,)

        module._svdflow_batched_forward = (batched, had_own)
        module.forward = forward
    elif not enabled and installed:
        batched, had_own = module.__dict__.pop("_svdflow_batched_forward")
        if had_own:
            module.forward = batched
        else:
            del module.forward


# Regional compilation: the UNet's heavy, repeated blocks, each compiled on its own. Blocks of one
# class and shape share one compiled graph, so dynamo traces ~20 graphs instead of one huge one;
# the only fusions lost are across block boundaries, where a conv or GEMM sits anyway.
REGIONAL_COMPILE_BLOCKS = ("SpatioTemporalResBlock", "TransformerSpatioTemporalModel")


def compile_unet(pipe, *, regional: bool = True) -> None:
    """torch.compile the UNet for speed: no CUDA graphs, static shapes, cache on disk.

    CUDA graphs ("reduce-overhead") measured no faster than the default mode on an H200 (the UNet
    step is ~0.5 s, launch overhead is noise) and pin memory per shape, so the default mode.
    dynamic=False: each (frames, height, width) gets its own specialised graph; jobs should run
    grouped by shape (see shape_groups). `regional=False` compiles the whole UNet as one graph.
    """
    import torch
    import torch._dynamo
    import torch._inductor.config as inductor_config

    configure_compile_cache()
    # A run with many shapes must not silently fall back to eager after the 8th; regional
    # compilation also keeps one graph per block variant (channels x resolution) under one code object.
    config = torch._dynamo.config
    limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # renamed in 2.6
    setattr(config, limit, max(getattr(config, limit), 256))
    if hasattr(config, "accumulated_recompile_limit"):
        config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, 4096)
    # 1x1 convs as matmuls: a GEMM with fusable epilogues instead of a cuDNN call (PyTorch's
    # SDXL recipe); the UNet has many (resnet shortcuts, transformer proj_in/out).
    inductor_config.conv_1x1_as_mm = True
    if not regional:
        pipe.unet = torch.compile(pipe.unet, mode="default", fullgraph=False, dynamic=False)
        return
    unet = unwrap_unet(pipe.unet)
    for block in unet.modules():
        if type(block).__name__ in REGIONAL_COMPILE_BLOCKS:
            block.compile(mode="default", fullgraph=False, dynamic=False)
