"""What a bench run measures: the architecture and size, the device, how many videos, which cases;
and the machine it runs on."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from svdflow.errors import UsageError

GIB = 1024**3
SEED = 20240501

# The cases `svdflow bench` runs by default, most telling first (a run cut short by its deadline keeps
# what it measured), and those that share a warm pipeline one after the other: the reference, the
# fastest lossless setting, the decoder's share of it and its two lossy relatives, the smallest-memory
# profile, each other lossless change switched off on its own, diffusers' recipe.
CASE_ORDER = ("balanced", "max-speed", "eager-vae", "draft", "fp8", "low-vram", "no-shortcut", "default-attention",
              "decode-one-chunk", "seed-offload")
# Only on request: compile-start means something only in a fresh process; the tuning modes compile for
# many minutes; the others are comparisons with earlier recipes.
SEPARATE_CASES = ("compile-start", "max-autotune", "coordinate-descent", "seed-offload-lowmem",
                  "low-vram-batched-cfg", "max-speed-fullgraph")
ALL_CASES = CASE_ORDER + SEPARATE_CASES

# The draft case's settings (issue 17): CFG on the first half of the steps, deep features reused on 2
# of every 3.
DRAFT = {"cfg_until": 0.5, "cache_interval": 3}

# Final latents against eager fp16 (balanced), as ||a - b|| / ||b||. fp16 has a unit roundoff of
# 2^-11 ~ 4.9e-4; a compiled graph (fused, re-associated reductions) or a batch-1 UNet call (other
# GEMM tilings) changes each step's output by ~1e-3 relative, and 25 Euler steps accumulate that,
# so ~1e-3 to a few 1e-3 is expected of a lossless change. 1e-2 leaves room for that and still fails
# anything really different: a swapped CFG branch, a missing term or a wrong timestep is O(1). The
# lossy cases (fp8, draft) are reported against it, not judged by it.
LATENT_REL_L2_TOL = 1e-2
LOSSY_CASES = ("fp8", "draft", "decode-one-chunk")

SIZES = {  # (num_frames, height, width, steps)
    "xt": (25, 576, 1024, 25),
    "svd": (14, 576, 1024, 25),
    "tiny": (4, 64, 64, 3),
}
CPU_SIZE = (2, 64, 64, 2)  # any variant on a CPU: enough to run every code path in seconds


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
    overlap: bool = False

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.num_frames, self.height, self.width)


def bench_config(variant: str | None, device: str, videos: int | None, steps: int | None, frames: int | None,
                 height: int | None, width: int | None, check_latents: bool = True, kernels: bool = False,
                 deadline_s: float | None = None, overlap: bool = False) -> BenchConfig:
    """The run's settings: sizes default to the variant's full size on CUDA and to a tiny one on a CPU."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: this machine has no CUDA device; use --device cpu or auto")
    if device.startswith("cuda") and ":" not in device:
        device = f"cuda:{torch.cuda.current_device()}"
    variant = variant or ("xt" if device.startswith("cuda") else "tiny")
    if variant not in SIZES:
        raise UsageError(f"--variant {variant}: not one of {', '.join(SIZES)}")
    size = SIZES[variant] if device.startswith("cuda") else CPU_SIZE if variant != "tiny" else SIZES["tiny"]
    return BenchConfig(variant=variant, device=device, dtype="float16" if device.startswith("cuda") else "float32",
                       num_frames=frames or size[0], height=height or size[1], width=width or size[2],
                       steps=steps or size[3], videos=max(1, videos or 2), check_latents=check_latents,
                       kernels=kernels, deadline_s=deadline_s, overlap=overlap)


def chosen_cases(cases: Sequence[str] | None) -> list[str]:
    """The cases to run, in the order asked (default: CASE_ORDER); UsageError names unknown ones."""
    wanted = list(cases) if cases else list(CASE_ORDER)
    unknown = [c for c in wanted if c not in ALL_CASES]
    if unknown:
        raise UsageError(f"unknown bench case{'s' * (len(unknown) > 1)} {', '.join(unknown)}; "
                         f"choose from {', '.join(ALL_CASES)}")
    return list(dict.fromkeys(wanted))


def environment(device: str) -> dict[str, Any]:
    """Versions and the machine, as the result records them."""
    import diffusers
    import torch

    env = {"torch": torch.__version__, "diffusers": diffusers.__version__, "python": platform.python_version(),
           "device": device, "inductor_cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR")}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / GIB, 1), cuda=torch.version.cuda,
                   compute_capability=f"{props.major}.{props.minor}")
    else:
        env.update(cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return env
