"""Hardware profiles: from the manifest's `hardware` block to concrete settings, and applying them.

A profile is a set of defaults; any field the manifest sets explicitly wins over it. What was
finally used is recorded in every index entry, so a video can be rendered again the same way.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from typing import Any

from svdflow.errors import DeviceError
from svdflow.manifest.schema import Hardware

GIB = 1024**3
# Below this much free memory, a resident fp16 SVD-XT at 576x1024x25 does not fit (measured peak
# with decode chunks: ~11 GiB); above the second, compiled resident runs comfortably.
LOW_VRAM_BELOW_GIB = 14
MAX_SPEED_FROM_GIB = 24
# torch.compile costs ~110 s once and saves ~0.17 s per UNet step (H200, SVD-XT, CFG): it wins
# after ~650 steps, i.e. ~26 videos of 25 steps. `compile: auto` compiles only past this.
COMPILE_PAYS_OFF_STEPS = 650

PROFILE_SETTINGS: dict[str, dict[str, Any]] = {
    "max-speed": {"offload": "none", "forward_chunking": False, "decode_chunk_size": 8, "compile": "auto"},
    "balanced": {"offload": "none", "forward_chunking": False, "decode_chunk_size": 8, "compile": "off"},
    "low-vram": {"offload": "group", "forward_chunking": True, "decode_chunk_size": 2, "compile": "off"},
    "cpu": {"offload": "none", "forward_chunking": False, "decode_chunk_size": None, "compile": "off"},
}


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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def lower_memory(self) -> ResolvedHardware | None:
        """The next rung of the out-of-memory ladder, or None at the bottom.

        Cheapest first: smaller VAE decode chunks cost little time, offloading costs the most.
        """
        if self.decode_chunk_size is None or self.decode_chunk_size > 2:
            return replace(self, decode_chunk_size=2)
        if not self.forward_chunking:
            return replace(self, forward_chunking=True)
        if self.decode_chunk_size > 1:
            return replace(self, decode_chunk_size=1)
        ladder = ("none", "group", "model", "sequential")
        if self.offload == ladder[-1]:
            return None
        return replace(self, offload=ladder[ladder.index(self.offload) + 1], compile=False)


@dataclass(frozen=True)
class DeviceFacts:
    """What the machine offers; gathered once, passed in so resolution is testable."""

    cuda_count: int
    mps: bool
    free_bytes: dict[str, int]  # per CUDA device name

    @classmethod
    def probe(cls) -> DeviceFacts:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        free = {}
        for i in range(count):
            free[f"cuda:{i}"] = torch.cuda.mem_get_info(i)[0]
        mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
        return cls(count, mps, free)


def resolve_hardware(hw: Hardware, facts: DeviceFacts, *, planned_unet_steps: int = 0,
                     env: dict[str, str] | None = None) -> ResolvedHardware:
    env = os.environ if env is None else env
    explicit = hw.model_fields_set
    device = _device(hw.device, facts, env)
    profile, reason = hw.profile, "set in the manifest"
    if profile == "auto":
        profile, reason = _auto_profile(device, facts)
    settings = dict(PROFILE_SETTINGS[profile])
    for name in ("offload", "forward_chunking", "decode_chunk_size", "compile"):
        if name in explicit:
            settings[name] = getattr(hw, name)
    dtype = hw.dtype if hw.dtype != "auto" else ("float32" if device == "cpu" else "float16")
    if device == "cpu" and settings["offload"] != "none":
        raise DeviceError(f"hardware.offload: {settings['offload']!r} moves weights to a GPU and back, but the "
                          f"device is cpu; set offload: none")
    compile_on = _compile_decision(settings["compile"], device, planned_unet_steps)
    return ResolvedHardware(profile, device, dtype, settings["offload"], settings["forward_chunking"],
                            settings["decode_chunk_size"], compile_on, reason)


def _device(requested: str, facts: DeviceFacts, env) -> str:
    if requested == "auto":
        if facts.cuda_count:
            # Under accelerate/torchrun each process owns the GPU of its local rank.
            return f"cuda:{int(env.get('LOCAL_RANK', 0)) % facts.cuda_count}"
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


def _compile_decision(setting: str, device: str, planned_unet_steps: int) -> bool:
    if setting == "on":
        return True
    if setting == "off" or not device.startswith("cuda"):
        return False
    return planned_unet_steps >= COMPILE_PAYS_OFF_STEPS


def torch_dtype(name: str):
    import torch

    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def apply_hardware(pipe, hw: ResolvedHardware):
    """Place and configure the pipeline as `hw` says; returns the same pipeline."""
    import torch

    pipe.to(dtype=torch_dtype(hw.dtype))
    if hw.offload == "none":
        pipe.to(hw.device)
    elif hw.offload == "model":
        pipe.enable_model_cpu_offload(device=hw.device)
    elif hw.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=hw.device)
    elif hw.offload == "group":
        # Only the UNet streams: the pipeline upcasts the VAE to fp32 and the group hooks do not follow.
        pipe.unet.enable_group_offload(onload_device=torch.device(hw.device), offload_device=torch.device("cpu"),
                                       offload_type="leaf_level", use_stream=True)
        for name in ("vae", "image_encoder"):
            getattr(pipe, name).to(hw.device)
    if hw.forward_chunking:
        pipe.unet.enable_forward_chunking()
    if hw.compile:
        pipe.unet = torch.compile(pipe.unet, mode="default", fullgraph=False, dynamic=False)
    return pipe
