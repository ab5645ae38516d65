"""The UNet's attention kernel, chosen explicitly: a hook that runs the UNet's forward with one
scaled-dot-product-attention backend first in torch's priority order (the others stay behind it, for
shapes it cannot take). Which one is probed on the GPU (svdflow.pipeline.attention) and recorded.

Around the whole forward, outside any compiled block: torch.compile bakes the backend chosen at trace
time into its graphs, and that trace happens inside this context too.
"""

from __future__ import annotations

from collections.abc import Sequence

from diffusers.hooks import HookRegistry, ModelHook
from torch.nn.attention import SDPBackend, sdpa_kernel

HOOK_NAME = "svdflow.attention_backend"
BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}


def priority(first: str) -> list[SDPBackend]:
    """`first`, then every other backend in torch's own default order."""
    return [BACKENDS[first], *(b for name, b in BACKENDS.items() if name != first)]


class AttentionBackendHook(ModelHook):
    """Runs the module's forward inside `sdpa_kernel(backends)`; with `exclusive`, only those backends."""

    def __init__(self, backends: Sequence[SDPBackend], exclusive: bool = False):
        super().__init__()
        self.backends, self.exclusive = list(backends), exclusive

    def new_forward(self, module, *args, **kwargs):
        with sdpa_kernel(self.backends, set_priority=not self.exclusive):
            return self.fn_ref.original_forward(*args, **kwargs)


def set_attention_backend(unet, backend: str | None, *, exclusive: bool = False) -> None:
    """Prefer `backend` for the UNet's attention (None: torch's own choice, the hook off)."""
    registry = HookRegistry.check_if_exists_or_initialize(unet)
    if registry.get_hook(HOOK_NAME) is not None:
        registry.remove_hook(HOOK_NAME, recurse=False)
    if backend is not None:
        backends = [BACKENDS[backend]] if exclusive else priority(backend)
        registry.register_hook(AttentionBackendHook(backends, exclusive), HOOK_NAME)


def orders_backends() -> bool:
    """Whether this torch can put one backend first and keep the others (sdpa_kernel's set_priority,
    torch 2.6+); without it a choice would exclude every other backend, so none is made."""
    import inspect

    return "set_priority" in inspect.signature(sdpa_kernel).parameters
