"""The one-token cross-attention shortcut: exact, on in every profile.

SVD's cross-attention (`attn2` of every spatial and temporal transformer block) attends to a context
of ONE token, the CLIP image embedding. Softmax over one key is exactly 1, so every query's output
is that token's value, whatever the query: `attn2(x, ctx) = to_out(to_v(ctx))`, broadcast over the
queries. The shortcut computes that per context row and returns it expanded (a view, no copy),
skipping the query projection, the key projection, the attention call and the output projection
over every token: at 576x1024x25 the output projection alone ran over 9,216 tokens x 50 frames
at the top level, the shortcut runs it over 50 rows (spatial) or 18,432 rows (temporal, one per
pixel and branch) instead of 460,800.

It is the same math as diffusers' `AttnProcessor2_0` in every step that remains (only the GEMMs run
over fewer rows, and BLAS picks its kernels by shape, so the rounding may differ): the residual is the
input (before spatial_norm), `spatial_norm`, `group_norm`, `norm_q` and `norm_k` only ever touch
queries or scores (dropped), `norm_cross` is applied to the context as there, the value is cast to
the query's dtype (the input's: no autocast), then `to_out`, `residual_connection` and
`rescale_output_factor` as there. Anything else falls back to the processor it replaced: a context
of more than one token, an attention mask, 4-D inputs, a module in training mode (dropout is per
token), autocast. On a CPU with one torch thread (svdflow's default for CPU renders) the frames are
bit-identical (tests/test_cross_attention.py; make demo's frames still equal release 0.1's). With
more threads BLAS may split the now much smaller output-projection GEMM differently (measured on
builtin:tiny at 3 frames and 2 threads: latents 1.6e-5 apart, relative L2); on a GPU, likewise
within fp16 rounding.

Why per call and not cached across steps: the context is the same at every step, but what remains
per call is two small GEMMs over the context rows (at 576x1024x25, ~170 GFLOP per step for all 32
attn2 layers against ~167 TFLOP for the step, 0.1 %). A cache would have to be keyed and
invalidated safely (sequential CFG and cfg_until slice the context into new tensors, overlapped
jobs interleave) and would change which layers run from one step to the next, which group
offloading's prefetch order and torch.compile's guards both dislike; 0.1 % does not pay for that.

The LayerNorm before attn2 (`norm2`) still runs in eager mode; its output is used only for its
shape, so inside a compiled block inductor removes it as dead code.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

# The processors whose math the shortcut reproduces; any other (IP-Adapter, custom) is left alone.
EXACT_FOR = (AttnProcessor2_0, AttnProcessor)


class OneTokenCrossAttention:
    """attn2's processor: to_out(to_v(context)) per context row, broadcast over the queries."""

    def __init__(self, previous):
        self.previous = previous  # the processor it replaced: the fallback, and what removal puts back

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args, **kwargs):
        if not takes_shortcut(attn, hidden_states, encoder_hidden_states, attention_mask):
            return self.previous(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        residual = hidden_states
        context = encoder_hidden_states
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        rows = attn.to_v(context).to(hidden_states.dtype)  # (N, 1, inner): the attention's output per row
        rows = attn.to_out[1](attn.to_out[0](rows))
        out = rows.expand(hidden_states.shape[0], hidden_states.shape[1], rows.shape[-1])
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def takes_shortcut(attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None,
                   attention_mask: torch.Tensor | None) -> bool:
    """Whether this call's attention is exactly the context's value (see the module docstring)."""
    return (encoder_hidden_states is not None and encoder_hidden_states.ndim == 3
            and encoder_hidden_states.shape[1] == 1 and attention_mask is None and hidden_states.ndim == 3
            and not attn.training and not torch.is_autocast_enabled(hidden_states.device.type))


def cross_attention_layers(unet) -> list[Attention]:
    """The transformer blocks' cross-attention layers (attn2) that run a processor the shortcut
    reproduces exactly."""
    layers = []
    for name, module in unet.named_modules():
        if name.rpartition(".")[2] != "attn2" or not isinstance(module, Attention):
            continue
        processor = module.processor
        if isinstance(processor, OneTokenCrossAttention) or (
                type(processor) in EXACT_FOR and module.is_cross_attention and module.added_kv_proj_dim is None):
            layers.append(module)
    return layers


def set_cross_attention_shortcut(unet, enabled: bool) -> int:
    """Put the shortcut on every eligible attn2 layer, or the previous processors back; idempotent
    both ways. Returns how many layers carry it."""
    count = 0
    for layer in cross_attention_layers(unet):
        installed = isinstance(layer.processor, OneTokenCrossAttention)
        if enabled and not installed:
            layer.set_processor(OneTokenCrossAttention(layer.processor))
        elif not enabled and installed:
            layer.set_processor(layer.processor.previous)
        count += enabled
    return count
