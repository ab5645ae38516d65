"""The attention kernel choice and regional compilation: shapes against the real UNet's calls, the
decision rule, the settings it lands in, and compiling / uncompiling blocks (no compile is run)."""

from __future__ import annotations

import collections

import pytest
import torch
import torch.nn.functional as F

from svdflow.manifest.schema import Hardware
from svdflow.pipeline import attention
from svdflow.pipeline.attention import attention_backends, decide, unet_attention_shapes
from svdflow.pipeline.profiles import (
    GIB,
    REGIONAL_COMPILE_BLOCKS,
    DeviceFacts,
    compile_unet,
    resolve_attention,
    resolve_hardware,
    uncompile_unet,
)
from svdflow.pipeline.tiny import SVD_UNET_CONFIG


@pytest.fixture(scope="module")
def tiny_pipe():
    from svdflow.pipeline.tiny import build_tiny_pipeline

    return build_tiny_pipeline()


def test_shapes_are_the_calls_the_unet_makes(tiny_pipe, monkeypatch):
    unet = tiny_pipe.unet
    frames, height, width = 3, 64, 128
    seen = collections.Counter()
    real = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        seen[tuple(q.shape), k.shape[2]] += 1
        return real(q, k, v, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    sample = torch.randn(2, frames, 8, height // 8, width // 8)
    with torch.inference_mode():
        unet(sample, torch.tensor(1.0), torch.randn(2, 1, unet.config.cross_attention_dim), torch.randn(2, 3))
    expected = collections.Counter()
    for s in unet_attention_shapes(unet.config, frames, height, width):
        expected[(s.batch, s.heads, s.queries, s.head_dim), s.keys] += s.calls
    assert seen == expected


def test_svd_xt_shapes_at_full_size():
    shapes = {s.describe(): s.calls for s in unet_attention_shapes(SVD_UNET_CONFIG, 25, 576, 1024)}
    # Level 0: 2 down + 3 up transformers; CFG doubles the 25 frames; 72x128 latent tokens.
    assert shapes["spatial@0 50x5x9216x9216x64"] == 5
    assert shapes["temporal@0 18432x5x25x25x64"] == 5
    assert shapes["cross@0 50x5x9216x1x64"] == 5
    # Level 3 (9x16) has only the mid block's transformer.
    assert shapes["spatial@3 50x20x144x144x64"] == 1
    assert len(shapes) == 16
    single = {s.describe() for s in unet_attention_shapes(SVD_UNET_CONFIG, 25, 576, 1024, cfg_batch=1)}
    assert "spatial@0 25x5x9216x9216x64" in single


def test_cudnn_order_gives_the_default_result_where_cudnn_does_not_apply():
    q = torch.randn(2, 2, 16, 8, generator=torch.Generator().manual_seed(0))
    with attention_backends("default"):
        expected = F.scaled_dot_product_attention(q, q, q)
    with attention_backends("cudnn"):
        got = F.scaled_dot_product_attention(q, q, q)
    torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="^attention 'flash' is not one of default, cudnn$"):
        with attention_backends("flash"):
            pass


def test_decide_takes_cudnn_only_when_it_works_matches_and_wins():
    assert decide({"default": 0.100, "cudnn": 0.080}, 1e-3, None) == (
        "cudnn", "cuDNN 80.0 ms/step against the default's 100.0")
    assert decide({"default": 0.100, "cudnn": 0.099}, 1e-3, None) == (
        "default", "cuDNN 99.0 ms/step is not 3% faster than the default's 100.0")
    assert decide({"default": 0.100, "cudnn": 0.050}, 0.2, None) == (
        "default", "cuDNN's outputs differ by 2.0e-01 (> 1e-02)")
    assert decide({"default": 0.100, "cudnn": 0.050}, 0.0, "cudnn failed on spatial@0 ...") == (
        "default", "cudnn failed on spatial@0 ...")


def test_probe_reports_every_shape_and_a_choice():
    shapes = unet_attention_shapes({"layers_per_block": 1, "num_attention_heads": 2, "block_out_channels": (32,),
                                    "down_block_types": ("CrossAttnDownBlockSpatioTemporal",),
                                    "up_block_types": ("CrossAttnUpBlockSpatioTemporal",)}, 2, 32, 32)
    result = attention.probe(shapes, "cpu", torch.float32, repeats=1)
    assert [row["shape"] for row in result["shapes"]] == [s.describe() for s in shapes]
    assert result["cudnn_worst_rel_error"] == 0.0  # on a CPU both orders run the same kernel
    assert result["chosen"] in ("default", "cudnn") and result["reason"]


def test_max_speed_measures_attention_on_a_gpu_only():
    h200 = DeviceFacts(1, False, {"cuda:0": 80 * GIB})
    assert resolve_hardware(Hardware(profile="max-speed"), h200, env={}).attention == "fastest"
    assert resolve_hardware(Hardware(profile="balanced"), h200, env={}).attention == "default"
    cpu = resolve_hardware(Hardware(profile="max-speed", device="cpu"), DeviceFacts(0, False, {}), env={})
    assert cpu.attention == "default"
    settled, probe = resolve_attention(cpu, SVD_UNET_CONFIG, (25, 576, 1024))
    assert (settled, probe) == (cpu, {})


def test_regional_compile_wraps_the_repeated_blocks_and_comes_off(tiny_pipe):
    unet = tiny_pipe.unet
    compile_unet(tiny_pipe)  # lazy: nothing compiles until a forward
    compiled = {type(m).__name__ for m in unet.modules() if getattr(m, "_compiled_call_impl", None) is not None}
    assert compiled == set(REGIONAL_COMPILE_BLOCKS)
    assert tiny_pipe.unet is unet
    assert uncompile_unet(tiny_pipe.unet) is unet
    assert not any(getattr(m, "_compiled_call_impl", None) is not None for m in unet.modules())

    compile_unet(tiny_pipe, regional=False)
    assert tiny_pipe.unet is not unet and tiny_pipe.unet._orig_mod is unet
    tiny_pipe.unet = uncompile_unet(tiny_pipe.unet)
    assert tiny_pipe.unet is unet
