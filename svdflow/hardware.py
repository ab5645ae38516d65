"""Hardware policy: from the manifest's `hardware` block and the machine's facts to the settings a run
uses. Pure data and rules, no torch: the manifest schema validates with it, and the pipeline room
applies what it decides (svdflow.pipeline.apply).

A profile is a set of defaults; any field the manifest sets explicitly wins over it. What was
finally used is recorded in every index entry, so a video can be rendered again the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from svdflow.compat import OmitsNewDefaults
from svdflow.errors import DeviceError

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
# job's UNet already fills the device, so only its idle moments can hide a decode (see
# svdflow.pipeline.overlap).
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
# FP8 matmuls (float8_e4m3fn tensor cores) exist from compute capability 8.9: Ada, Hopper, Blackwell.
FP8_MIN_CAPABILITY = (8, 9)

# The fields of `hardware:` that override a profile's setting of the same name.
OVERRIDABLE = ("offload", "forward_chunking", "decode_chunk_size", "compile", "overlap_decode")

# Least memory last. Model offload keeps the whole UNet on the GPU while it denoises; group offload
# streams the UNet and CLIP layer by layer, the next layer copied in on a side stream while one
# computes, the VAE resident; sequential (accelerate's hooks) moves every model's layers in and
# out synchronously, the VAE's too.
OFFLOAD_LADDER = ("none", "model", "group", "sequential")

Shape = tuple[int, int, int]  # (num_frames, height, width): what a compiled UNet specialises on


class RequestedHardware(Protocol):
    """The manifest's `hardware` block as this module reads it (svdflow.manifest.schema.Hardware)."""

    profile: str
    device: str
    dtype: str
    offload: str
    forward_chunking: bool
    decode_chunk_size: int | None
    compile: str
    overlap_decode: bool
    fp8: bool

    @property
    def model_fields_set(self) -> set[str]: ...


class ResolvedHardware(OmitsNewDefaults):
    """The hardware settings a job was rendered with, as recorded in its index entry.

    Fields added after release 0.1 default to what 0.1 did and are written only when they differ."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    RELEASED_FIELDS = frozenset({"profile", "device", "dtype", "offload", "forward_chunking", "decode_chunk_size",
                                 "compile", "reason", "sequential_cfg", "cpu_threads", "overlap_decode", "oom_retries"})

    profile: str = Field(description="The profile used (auto resolved to one of max-speed, balanced, low-vram, cpu).")
    device: str = Field(description="The device rendered on: cpu, cuda:N or mps.")
    dtype: str = Field(description="Weights and activations dtype: float16, bfloat16 or float32.")
    offload: Literal["none", "model", "group", "sequential"] = Field(
        description="How weights were kept off the GPU between uses.")
    forward_chunking: bool = Field(description="Whether the UNet's feed-forward layers ran in chunks.")
    decode_chunk_size: int | None = Field(description="Frames the VAE decoded at once; null: all of them.")
    compile: bool = Field(description="Whether the UNet's repeated blocks were compiled with torch.compile.")
    reason: str = Field("", description="Why `profile: auto` or `compile: auto` chose what they chose.")
    sequential_cfg: bool = Field(
        False, description="Whether CFG's two UNet branches ran one after the other (half the activations).")
    # CPU kernels split reductions by thread count, so frames differ between 1 and 2 threads. A fixed
    # count makes CPU frames bit-identical across machines and launchers (None: torch's default).
    cpu_threads: int | None = Field(
        None, description="torch threads of a CPU render (frames depend on it); null on a GPU.")
    overlap_decode: bool = Field(
        False, description="Whether the VAE decode ran on a side stream while the next job denoised.")
    compile_vae: bool = Field(
        False, description="Whether the VAE decoder was compiled with torch.compile too (with compile, on CUDA).")
    attention_backend: Literal["cudnn", "flash", "efficient", "math"] | None = Field(
        None, description="The scaled-dot-product-attention kernel the UNet preferred (probed on the GPU for the "
                          "job's shapes; the others stay as fallbacks for shapes it cannot take); null: torch's own "
                          "choice.")
    fp8: bool = Field(
        False, description="Whether the UNet's transformer Linear layers ran as FP8 matmuls with dynamic per-row "
                           "scales (hardware.fp8; changes pixels, so it is in the content key).")

    def to_json(self) -> dict[str, Any]:
        """Every setting, those at their defaults too (a dump leaves out new ones at their defaults)."""
        return {name: getattr(self, name) for name in type(self).model_fields}

    def replace(self, **changes: Any) -> ResolvedHardware:
        return self.model_copy(update=changes)

    def changes_to(self, other: ResolvedHardware) -> dict[str, Any]:
        """The settings `other` changes, with their new values (why auto chose is no setting)."""
        old, new = self.to_json(), other.to_json()
        return {k: new[k] for k in new if new[k] != old[k] and k != "reason"}

    def describe(self) -> str:
        return (f"offload={self.offload}, forward_chunking={self.forward_chunking}, "
                f"sequential_cfg={self.sequential_cfg}, decode_chunk_size={self.decode_chunk_size}")


class OomRetry(BaseModel):
    """One step down the out-of-memory ladder (svdflow.pipeline.ladder), as the entry records it."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    job: str = Field(description="The job that ran out of memory.")
    error: str = Field(description="The out-of-memory error's first line.")
    failed_after_s: float = Field(description="Seconds into the attempt when it failed.")
    changed: str = Field(description="The settings changed for the retry, e.g. decode_chunk_size=2.")
    from_: ResolvedHardware = Field(alias="from", description="The settings that ran out of memory.")
    to: ResolvedHardware = Field(description="The settings of the retry.")
    succeeded_s: float | None = Field(None, description="Seconds the retry that worked took.")

    @model_serializer(mode="wrap")
    def _without_unset_success(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if not (k == "succeeded_s" and v is None)}


class HardwareRecord(ResolvedHardware):
    """The settings a job was rendered with, and the out-of-memory retries it took to get there."""

    oom_retries: list[OomRetry] = Field(default_factory=list, description="Out-of-memory retries, in order.")


@dataclass(frozen=True)
class DeviceFacts:
    """What the machine offers; gathered once (svdflow.pipeline.device.probe), passed in so that
    resolution is testable without the hardware."""

    cuda_count: int
    mps: bool
    free_bytes: dict[str, int]  # per CUDA device name
    names: dict[str, str] = field(default_factory=dict)  # per CUDA device name: "NVIDIA H200"
    capability: dict[str, tuple[int, int]] = field(default_factory=dict)  # per CUDA device name: (9, 0)


def overlap_conflict(offload: str, profile: str | None) -> str | None:
    """Why overlap_decode cannot run with this offload (which came from `profile`, or was set), or
    None when it can: the one statement of that rule, for the schema and for resolution."""
    if offload == "none":
        return None
    return (f"overlap_decode: true decodes beside the next job's UNet, which needs every model resident, but "
            f"offload is {offload!r}{f' (profile {profile})' if profile else ''}; set offload: none, or "
            f"overlap_decode: false")


def fp8_conflict(offload: str, profile: str | None) -> str | None:
    """Why fp8 cannot run with this offload, or None: its FP8 weights live beside the UNet's on the GPU."""
    if offload == "none":
        return None
    return (f"fp8: true keeps FP8 copies of the UNet's weights on the GPU, which needs the UNet resident, but "
            f"offload is {offload!r}{f' (profile {profile})' if profile else ''}; set offload: none, or fp8: false")


def manifest_fp8_conflict(hw: RequestedHardware) -> str | None:
    """What the file alone decides about fp8 (as manifest_overlap_conflict for overlap_decode)."""
    if not hw.fp8:
        return None
    explicit = "offload" in hw.model_fields_set
    offload = hw.offload if explicit else PROFILE_SETTINGS.get(hw.profile, {}).get("offload", "none")
    return fp8_conflict(offload, None if explicit else hw.profile)


def fp8_refusal(device: str, dtype: str, facts: DeviceFacts) -> str | None:
    """Why `fp8: true` cannot run on this device, or None: the message names the device, its compute
    capability and the fix."""
    fix = "remove fp8 (or set fp8: false) to render without it"
    if not device.startswith("cuda"):
        return (f"hardware.fp8: true needs an NVIDIA GPU of compute capability "
                f"{FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]} or newer (Ada, Hopper, Blackwell) for FP8 matmuls, "
                f"but the device is {device}, which has no CUDA compute capability; {fix}, or render on such a GPU")
    capability = facts.capability.get(device)
    name = facts.names.get(device, "a CUDA device")
    if capability is None or tuple(capability) < FP8_MIN_CAPABILITY:
        have = f"compute capability {capability[0]}.{capability[1]}" if capability else "unknown compute capability"
        return (f"hardware.fp8: true needs an NVIDIA GPU of compute capability "
                f"{FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]} or newer (Ada, Hopper, Blackwell) for FP8 matmuls, "
                f"but {device} is {name} ({have}); {fix}")
    if dtype not in ("float16", "bfloat16"):
        return (f"hardware.fp8: true quantises a float16 or bfloat16 UNet, but dtype is {dtype}; set dtype: float16 "
                f"(or auto), or {fix}")
    return None


def requested_settings(hw: RequestedHardware, profile: str) -> dict[str, Any]:
    """The profile's settings with the fields the manifest sets itself put over them."""
    settings = dict(PROFILE_SETTINGS[profile])
    for name in OVERRIDABLE:
        if name in hw.model_fields_set:
            settings[name] = getattr(hw, name)
    return settings


def manifest_overlap_conflict(hw: RequestedHardware) -> str | None:
    """What the file alone decides about overlap_decode (`profile: auto` may still pick low-vram on
    a small GPU, which resolve_hardware refuses the same way)."""
    if not hw.overlap_decode:
        return None
    explicit = "offload" in hw.model_fields_set
    offload = hw.offload if explicit else PROFILE_SETTINGS.get(hw.profile, {}).get("offload", "none")
    return overlap_conflict(offload, None if explicit else hw.profile)


def job_shape(params: Any) -> Shape:
    """What a compiled UNet is specialised on (dynamic=False): a new shape means a new compile.
    `params` is a job's parameters (attributes) or a mapping of them."""
    if isinstance(params, Mapping):
        return (int(params["num_frames"]), int(params["height"]), int(params["width"]))
    return (int(params.num_frames), int(params.height), int(params.width))


def _steps(params: Any) -> int:
    """UNet steps of one job: its denoising steps, once per chained segment."""
    if isinstance(params, Mapping):
        return int(params["num_inference_steps"]) * int(params.get("segments", 1))
    return int(params.num_inference_steps) * int(getattr(params, "segments", 1))


def shape_groups(jobs: Iterable[Any]) -> list[tuple[Shape, list[Any]]]:
    """Jobs grouped by shape, groups in order of first appearance, jobs in their order within.

    Rendering group by group compiles each shape once: the UNet is compiled with dynamic=False,
    so alternating shapes would swap graphs (or recompile past dynamo's recompile limit).
    Accepts jobs (with .params) or parameters.
    """
    groups: dict[Shape, list[Any]] = {}
    for job in jobs:
        groups.setdefault(job_shape(getattr(job, "params", job)), []).append(job)
    return list(groups.items())


def planned_steps_by_shape(jobs: Iterable[Any]) -> dict[Shape, int]:
    return {shape: sum(_steps(getattr(j, "params", j)) for j in group) for shape, group in shape_groups(jobs)}


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


def resolve_hardware(hw: RequestedHardware, facts: DeviceFacts, *, planned_unet_steps: int | Mapping[Shape, int] = 0,
                     compile_cache_warm: bool | Iterable[Shape] = False, cpu_threads: int = 1,
                     local_rank: int = 0) -> ResolvedHardware:
    """The settings to run with. `local_rank`: this process's rank on its node under a launcher
    (its GPU); `cpu_threads`: torch threads for a CPU render (svdflow.settings)."""
    device = _device(hw.device, facts, local_rank)
    profile, reason = hw.profile, "set in the manifest"
    if profile == "auto":
        profile, reason = _auto_profile(device, facts)
    settings = requested_settings(hw, profile)
    dtype = hw.dtype if hw.dtype != "auto" else ("float32" if device == "cpu" else "float16")
    if device == "cpu" and settings["offload"] != "none":
        raise DeviceError(f"hardware.offload: {settings['offload']!r} moves weights to a GPU and back, but the "
                          f"device is cpu; set offload: none")
    offload_profile = None if "offload" in hw.model_fields_set else profile
    if settings["overlap_decode"] and (conflict := overlap_conflict(settings["offload"], offload_profile)):
        raise DeviceError("hardware." + conflict)  # profile auto chose low-vram
    if hw.fp8:
        if refusal := fp8_refusal(device, dtype, facts):
            raise DeviceError(refusal)
        if conflict := fp8_conflict(settings["offload"], offload_profile):
            raise DeviceError("hardware." + conflict)  # profile auto chose low-vram
    compile_on, why = _compile_decision(settings["compile"], device, planned_unet_steps, compile_cache_warm)
    if why:
        reason = f"{reason}; {why}"
    return ResolvedHardware(
        profile=profile, device=device, dtype=dtype, offload=settings["offload"],
        forward_chunking=settings["forward_chunking"], decode_chunk_size=settings["decode_chunk_size"],
        compile=compile_on, reason=reason, sequential_cfg=settings["sequential_cfg"],
        cpu_threads=cpu_threads if device == "cpu" else None, overlap_decode=settings["overlap_decode"],
        # The decoder compiles with the UNet, on CUDA (where compile: auto can say yes at all).
        compile_vae=compile_on and device.startswith("cuda"), fp8=hw.fp8)


def _device(requested: str, facts: DeviceFacts, local_rank: int) -> str:
    if requested == "auto":
        if facts.cuda_count:
            # Under a launcher (torchrun, accelerate, MPI, Slurm) each process owns the GPU of its local rank.
            return f"cuda:{local_rank % facts.cuda_count}"
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
