"""FP8 matmuls for the UNet's transformer Linear layers (`hardware.fp8`, opt-in, near-lossless).

Each chosen Linear gets a hook that runs its matmul as `torch._scaled_mm` on float8_e4m3fn operands:
the weight quantised once, when the hook goes on, with one scale per output row; the activation
quantised on every call with one scale per row (dynamic), the product accumulated in float32 and
scaled back. That is torchao's "float8 dynamic activation, float8 weight, per-row" recipe, written
against torch's own op so that no further package has to match the GPU host's torch. The layer's
own weights stay as they were: removing the hook gives back the float16 layer exactly.

Which layers: the Linear layers inside the UNet's transformer models (projections in and out,
self-attention, feed-forward: ~45 % of the UNet's FLOPs at 576x1024x25), not the cross-attention
(with the one-token shortcut it runs over a few rows only) nor the frame-position embedding, and only
where both dimensions are multiples of 16 (what the FP8 GEMMs take). Convolutions stay float16.

Needs compute capability 8.9+ (refused before loading, svdflow.hardware.fp8_refusal) and a torch
whose `_scaled_mm` takes per-row scales on that GPU (checked when the hooks go on). Its quantising
passes are separate kernels in eager mode; compiled, inductor fuses them into their neighbours.
"""

from __future__ import annotations

import torch
from diffusers.hooks import HookRegistry, ModelHook

from svdflow.errors import DeviceError

HOOK_NAME = "svdflow.fp8"
E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max  # 448
_TINY = 1e-12  # an all-zero row still gets a usable scale


def _quantise_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows in float8, their float32 scales (rows, 1)): x ~ q * scale, row by row."""
    x = x.float()
    scale = x.abs().amax(dim=1, keepdim=True).clamp(min=_TINY) / E4M3_MAX
    return (x / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


class Fp8LinearHook(ModelHook):
    """Runs one Linear layer's matmul in FP8 (see the module docstring)."""

    def __init__(self, out_dtype: torch.dtype):
        super().__init__()
        self.out_dtype = out_dtype  # what _scaled_mm writes; cast to the activation's dtype after
        self.weight: torch.Tensor | None = None  # (out, in) float8
        self.weight_scale: torch.Tensor | None = None  # (1, out) float32

    def initialize_hook(self, module):
        weight, scale = _quantise_rows(module.weight.detach())
        self.weight, self.weight_scale = weight, scale.reshape(1, -1).contiguous()
        return module

    def new_forward(self, module, x):
        rows, scale = _quantise_rows(x.reshape(-1, x.shape[-1]))
        out = torch._scaled_mm(rows, self.weight.t(), scale_a=scale, scale_b=self.weight_scale,
                               out_dtype=self.out_dtype).to(x.dtype)
        if module.bias is not None:
            out = out + module.bias
        return out.reshape(*x.shape[:-1], out.shape[-1])


def fp8_layers(unet) -> list[torch.nn.Linear]:
    """The Linear layers FP8 runs (see the module docstring), in module order."""
    layers = []
    for block in unet.modules():
        if type(block).__name__ != "TransformerSpatioTemporalModel":
            continue
        for name, module in block.named_modules():
            parts = name.split(".")
            if (isinstance(module, torch.nn.Linear) and "attn2" not in parts and "time_pos_embed" not in parts
                    and module.in_features % 16 == 0 and module.out_features % 16 == 0):
                layers.append(module)
    return layers


def fp8_out_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The dtype per-row-scaled FP8 matmuls can write here: the model's, else bfloat16 (some torch
    releases write only that with per-row scales). DeviceError when neither runs."""
    a = torch.ones(16, 32, device=device).to(E4M3)
    b = torch.ones(16, 32, device=device).to(E4M3).t()
    scale_a, scale_b = torch.ones(16, 1, device=device), torch.ones(1, 16, device=device)
    errors = []
    for out_dtype in dict.fromkeys((dtype, torch.bfloat16)):
        try:
            torch._scaled_mm(a, b, scale_a=scale_a, scale_b=scale_b, out_dtype=out_dtype)
            return out_dtype
        except (RuntimeError, TypeError, NotImplementedError) as exc:
            errors.append(f"{str(out_dtype).removeprefix('torch.')}: {str(exc).strip().splitlines()[0]}")
    raise DeviceError(f"hardware.fp8: true, but torch {torch.__version__} runs no per-row-scaled FP8 matmul on "
                      f"{device} ({'; '.join(errors)}); set fp8: false, or use a torch release that does")


def set_fp8(unet, enabled: bool) -> int:
    """FP8 hooks on every chosen layer, or off again; idempotent both ways. Returns how many layers
    carry them."""
    layers = fp8_layers(unet)
    out_dtype = fp8_out_dtype(unet.device, unet.dtype) if enabled and layers else None
    for layer in layers:
        registry = HookRegistry.check_if_exists_or_initialize(layer)
        installed = registry.get_hook(HOOK_NAME) is not None
        if enabled and not installed:
            registry.register_hook(Fp8LinearHook(out_dtype), HOOK_NAME)
        elif not enabled and installed:
            registry.remove_hook(HOOK_NAME, recurse=False)
    return len(layers) if enabled else 0
