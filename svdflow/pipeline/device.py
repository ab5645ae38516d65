"""What this machine's torch offers: devices, their free memory, dtypes; freeing cached memory."""

from __future__ import annotations

import gc

from svdflow.hardware import DeviceFacts


def probe() -> DeviceFacts:
    """The CUDA devices (with free memory, names and compute capabilities) and whether MPS is there."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    free, names, capability = {}, {}, {}
    for i in range(count):
        free[f"cuda:{i}"] = torch.cuda.mem_get_info(i)[0]
        names[f"cuda:{i}"] = torch.cuda.get_device_name(i)
        capability[f"cuda:{i}"] = tuple(torch.cuda.get_device_capability(i))
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return DeviceFacts(count, mps, free, names, capability)


def torch_dtype(name: str):
    import torch

    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def free_device_memory() -> None:
    """Collect garbage and give cached CUDA blocks back, so that a retry starts with the room."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
