"""The one-token cross-attention shortcut: the same frames, bit for bit, with less work."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import write_image, write_manifest
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from svdflow.api import run_manifest
from svdflow.hardware import ResolvedHardware
from svdflow.inputs import decode_image, resize_image
from svdflow.manifest.schema import JobParams
from svdflow.pipeline.apply import apply_hardware
from svdflow.pipeline.hooks.cross_attention import OneTokenCrossAttention, set_cross_attention_shortcut
from svdflow.pipeline.process_state import ProcessChanges
from svdflow.pipeline.render import denoise_latents, render_frames, torch_threads
from svdflow.pipeline.tiny import build_tiny_pipeline
from svdflow.run.keys import frames_sha256


class _Calls:
    """Counts the query projections of attn1/attn2 layers and the attention calls over one key."""

    def __init__(self, unet, monkeypatch):
        self.q = {"attn1": 0, "attn2": 0}
        self.one_key_sdpa = 0
        for name, module in unet.named_modules():
            kind = name.rpartition(".")[2]
            if kind in self.q:
                module.to_q.register_forward_hook(lambda *_a, kind=kind: self.q.__setitem__(kind, self.q[kind] + 1))
        original = torch.nn.functional.scaled_dot_product_attention

        def counting(query, key, *args, **kwargs):
            self.one_key_sdpa += key.shape[-2] == 1
            return original(query, key, *args, **kwargs)

        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)


@pytest.mark.slow
def test_a_run_renders_the_same_frames_as_the_full_attention_and_skips_it(tmp_path, monkeypatch):
    write_image(tmp_path / "a.png", 96, 64)
    manifest = write_manifest(tmp_path, """
        svdflow: 1
        model: {source: "builtin:tiny"}
        hardware: {profile: cpu}
        output: {dir: out, formats: [gif]}
        defaults: {num_frames: 3, num_inference_steps: 2, width: 64, height: 64}
        items: [{id: a, image: a.png}]
    """)
    assert run_manifest(manifest).statuses == {"a": "done"}
    entry = json.loads((tmp_path / "out" / "a.json").read_text())
    hardware = ResolvedHardware(**{k: v for k, v in entry["hardware"].items() if k != "oom_retries"})
    params = JobParams(**entry["params"])
    pipe = build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    apply_hardware(pipe, hardware, ProcessChanges())
    layers = [m for n, m in pipe.unet.named_modules() if n.endswith("attn2")]
    assert len(layers) == 12 and all(isinstance(m.processor, OneTokenCrossAttention) for m in layers)
    image = resize_image(decode_image((tmp_path / "a.png").read_bytes(), "a.png"), 64, 64, "crop")

    calls = _Calls(pipe.unet, monkeypatch)
    with torch_threads(hardware.cpu_threads):  # as the run: 1 thread (others may split small GEMMs otherwise)
        with_shortcut = denoise_latents(pipe, image, params)
    # 2 steps, one UNet call of both CFG branches each: every attn1 ran its query projection, no attn2
    # did, and no attention over one key was called.
    assert (calls.q, calls.one_key_sdpa) == ({"attn1": 24, "attn2": 0}, 0)

    assert set_cross_attention_shortcut(pipe.unet, False) == 0
    assert all(type(m.processor) is AttnProcessor2_0 for m in layers)
    calls = _Calls(pipe.unet, monkeypatch)
    with torch_threads(hardware.cpu_threads):
        without = denoise_latents(pipe, image, params)
    assert (calls.q, calls.one_key_sdpa) == ({"attn1": 24, "attn2": 24}, 24)
    assert torch.equal(with_shortcut, without)

    # The run's frames (shortcut on) are those of a render with the full attention, bit for bit.
    frames = render_frames(pipe, image, params, cpu_threads=hardware.cpu_threads)
    assert frames_sha256(frames) == entry["frames_sha256"]
    assert set_cross_attention_shortcut(pipe.unet, True) == 12 == set_cross_attention_shortcut(pipe.unet, True)


def _layer(**options) -> Attention:
    torch.manual_seed(0)
    layer = Attention(query_dim=32, cross_attention_dim=16, heads=2, dim_head=16, **options).eval()
    layer.set_processor(AttnProcessor2_0())
    return layer


@pytest.mark.parametrize("options", [{}, {"residual_connection": True, "rescale_output_factor": 2.0},
                                     {"cross_attention_norm": "layer_norm"}])
def test_one_token_is_the_attention_whatever_the_layers_options(options):
    layer = _layer(**options)
    x, context = torch.randn(3, 10, 32), torch.randn(3, 1, 16)
    with torch.no_grad():
        full = layer(x, encoder_hidden_states=context)
        layer.set_processor(OneTokenCrossAttention(layer.processor))
        shortcut = layer(x, encoder_hidden_states=context)
    # The same math; only the output projection's GEMM runs over 3 rows instead of 30, which BLAS
    # may round differently (the UNet's shapes happen not to: see the test above).
    assert shortcut.shape == full.shape
    torch.testing.assert_close(shortcut, full, rtol=1e-6, atol=1e-6)



def test_what_the_shortcut_cannot_take_goes_to_the_processor_it_replaced():
    layer = _layer()
    previous = layer.processor
    calls = []

    def spy(*args, **kwargs):
        calls.append(1)
        return previous(*args, **kwargs)

    layer.set_processor(OneTokenCrossAttention(spy))
    x = torch.randn(2, 10, 32)
    layer(x, encoder_hidden_states=torch.randn(2, 1, 16))
    assert calls == []
    layer(x, encoder_hidden_states=torch.randn(2, 2, 16))  # two tokens: a real softmax
    layer(x, encoder_hidden_states=torch.randn(2, 1, 16), attention_mask=torch.zeros(2, 1, 1))
    layer.train()
    layer(x, encoder_hidden_states=torch.randn(2, 1, 16))  # dropout is per token
    assert len(calls) == 3
