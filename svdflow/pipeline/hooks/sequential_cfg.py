"""Sequential CFG: the UNet runs once per classifier-free-guidance branch instead of once on the
batch of both.

diffusers' SVD pipeline concatenates the unconditional and conditional latents into a batch of 2;
every activation then has twice the size. Split, the peak halves and the math is the same (each
sample's result never depended on the other): the frames are bit-identical on a CPU.
"""

from __future__ import annotations

import torch
from diffusers.hooks import HookRegistry, ModelHook

HOOK_NAME = "svdflow.sequential_cfg"


class SequentialCfgHook(ModelHook):
    """Calls the UNet's forward once per sample of the batch and concatenates the results."""

    def new_forward(self, module, sample, timestep, encoder_hidden_states, added_time_ids, return_dict=True):
        forward = self.fn_ref.original_forward
        if sample.shape[0] < 2:
            return forward(sample, timestep, encoder_hidden_states, added_time_ids, return_dict=return_dict)
        outputs = []
        for i in range(sample.shape[0]):
            t = timestep[i:i + 1] if torch.is_tensor(timestep) and timestep.ndim else timestep
            outputs.append(forward(sample[i:i + 1], t, encoder_hidden_states[i:i + 1], added_time_ids[i:i + 1],
                                   return_dict=False)[0])
        out = torch.cat(outputs)
        if not return_dict:
            return (out,)
        from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionOutput

        return UNetSpatioTemporalConditionOutput(sample=out)


def set_sequential_cfg(unet, enabled: bool) -> None:
    """Register the hook on the UNet, or remove it; idempotent both ways."""
    registry = HookRegistry.check_if_exists_or_initialize(unet)
    installed = registry.get_hook(HOOK_NAME) is not None
    if enabled and not installed:
        registry.register_hook(SequentialCfgHook(), HOOK_NAME)
    elif not enabled and installed:
        registry.remove_hook(HOOK_NAME, recurse=False)
