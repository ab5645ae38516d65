"""Regional compilation: each of the UNet's heavy, repeated blocks runs a `torch.compile`d forward
(and, with the same hook, the VAE's decoder as one graph).

Blocks of one class and shape share one compiled graph, so dynamo traces ~20 graphs instead of one
huge one; the only fusions lost are across block boundaries, where a conv or GEMM sits anyway.
Removing the hooks puts every block back to eager, with nothing left behind.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook

HOOK_NAME = "svdflow.regional_compile"
REGIONAL_COMPILE_BLOCKS = ("SpatioTemporalResBlock", "TransformerSpatioTemporalModel")


class CompiledForwardHook(ModelHook):
    """Runs the block's own forward through torch.compile."""

    def __init__(self, **compile_options: Any):
        super().__init__()
        self.compile_options = compile_options
        self.compiled = None

    def new_forward(self, module, *args, **kwargs):
        if self.compiled is None:
            self.compiled = torch.compile(self.fn_ref.original_forward, **self.compile_options)
        return self.compiled(*args, **kwargs)


def compiled_blocks(unet) -> list[torch.nn.Module]:
    return [block for block in unet.modules() if type(block).__name__ in REGIONAL_COMPILE_BLOCKS]


def apply_regional_compile(unet, **compile_options: Any) -> int:
    """Compile every repeated block's forward (idempotent); returns how many blocks carry the hook."""
    blocks = compiled_blocks(unet)
    for block in blocks:
        registry = HookRegistry.check_if_exists_or_initialize(block)
        if registry.get_hook(HOOK_NAME) is None:
            registry.register_hook(CompiledForwardHook(**compile_options), HOOK_NAME)
    return len(blocks)


def remove_regional_compile(unet) -> None:
    """Every block back to its eager forward."""
    for block in compiled_blocks(unet):
        HookRegistry.check_if_exists_or_initialize(block).remove_hook(HOOK_NAME, recurse=False)


def compile_forward(module, **compile_options: Any) -> None:
    """One module's forward through torch.compile (the VAE decoder's), idempotent."""
    registry = HookRegistry.check_if_exists_or_initialize(module)
    if registry.get_hook(HOOK_NAME) is None:
        registry.register_hook(CompiledForwardHook(**compile_options), HOOK_NAME)


def remove_compiled_forward(module) -> None:
    HookRegistry.check_if_exists_or_initialize(module).remove_hook(HOOK_NAME, recurse=False)
