"""hardware.fp8: refused where it cannot run (exactly), in the key, and the FP8 matmul hook's math on
the CPU (torch's _scaled_mm runs there too; svdflow refuses it there only because it is no faster)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_cli, write_image, write_manifest
from PIL import Image

from svdflow.errors import DeviceError
from svdflow.hardware import GIB, DeviceFacts, ResolvedHardware, resolve_hardware
from svdflow.manifest.schema import Hardware, JobParams
from svdflow.pipeline.hooks.fp8 import Fp8LinearHook, fp8_layers, set_fp8
from svdflow.pipeline.ladder import next_rung

H200 = DeviceFacts(1, False, {"cuda:0": 80 * GIB}, {"cuda:0": "NVIDIA H200"}, {"cuda:0": (9, 0)})
RTX_4090 = DeviceFacts(1, False, {"cuda:0": 20 * GIB}, {"cuda:0": "NVIDIA GeForce RTX 4090"}, {"cuda:0": (8, 9)})
A100 = DeviceFacts(1, False, {"cuda:0": 80 * GIB}, {"cuda:0": "NVIDIA A100-SXM4-80GB"}, {"cuda:0": (8, 0)})
SMALL_H100 = DeviceFacts(1, False, {"cuda:0": 8 * GIB}, {"cuda:0": "NVIDIA H100"}, {"cuda:0": (9, 0)})
NEEDS = "hardware.fp8: true needs an NVIDIA GPU of compute capability 8.9 or newer (Ada, Hopper, Blackwell) for FP8 matmuls, "


def test_fp8_on_a_cpu_run_is_an_environment_error_naming_the_device_and_the_fix(tmp_path, capsys):
    write_image(tmp_path / "a.png", 64, 64)
    manifest = write_manifest(tmp_path, """
        svdflow: 1
        model: {source: "builtin:tiny"}
        hardware: {profile: cpu, fp8: true}
        output: {dir: out, formats: [gif]}
        defaults: {num_frames: 2, num_inference_steps: 1, width: 64, height: 64}
        items: [{id: a, image: a.png}]
    """)
    code, _, err = run_cli(capsys, "run", str(manifest))
    assert code == 3
    assert err.strip().splitlines()[-1] == (
        "error: " + NEEDS + "but the device is cpu, which has no CUDA compute capability; remove fp8 (or set "
        "fp8: false) to render without it, or render on such a GPU")
    assert not (tmp_path / "out" / "a.gif").exists()


def test_fp8_runs_from_compute_capability_8_9_and_is_refused_below_with_the_gpus_name():
    assert resolve_hardware(Hardware(fp8=True), H200).fp8 is True
    assert resolve_hardware(Hardware(fp8=True), RTX_4090).fp8 is True
    assert resolve_hardware(Hardware(), H200).fp8 is False
    with pytest.raises(DeviceError) as refused:
        resolve_hardware(Hardware(fp8=True), A100)
    assert str(refused.value) == NEEDS + ("but cuda:0 is NVIDIA A100-SXM4-80GB (compute capability 8.0); remove fp8 "
                                          "(or set fp8: false) to render without it")
    with pytest.raises(DeviceError) as refused:
        resolve_hardware(Hardware(fp8=True, dtype="float32"), H200)
    assert str(refused.value) == ("hardware.fp8: true quantises a float16 or bfloat16 UNet, but dtype is float32; set "
                                  "dtype: float16 (or auto), or remove fp8 (or set fp8: false) to render without it")
    # profile auto picks low-vram on a small GPU, whose offloading cannot carry the FP8 weights.
    with pytest.raises(DeviceError) as refused:
        resolve_hardware(Hardware(fp8=True), SMALL_H100)
    assert str(refused.value) == (
        "hardware.fp8: true keeps FP8 copies of the UNet's weights on the GPU, which needs the UNet resident, but "
        "offload is 'group' (profile low-vram); set offload: none, or fp8: false")


def test_fp8_with_offloading_is_an_invalid_manifest():
    with pytest.raises(ValueError, match="fp8: true keeps FP8 copies of the UNet's weights on the GPU, which needs "
                                         "the UNet resident, but offload is 'model'; set offload: none, or fp8: false"):
        Hardware(fp8=True, offload="model")


def test_fp8_is_in_the_key_only_when_on_and_a_plan_names_it(tmp_path):
    from svdflow.api import load_run_spec, plan_run, run_manifest

    write_image(tmp_path / "a.png", 64, 64)
    body = """
        svdflow: 1
        model: {source: "builtin:tiny"}
        hardware: {profile: cpu}
        output: {dir: out, formats: [gif]}
        defaults: {num_frames: 2, num_inference_steps: 1, width: 64, height: 64}
        items: [{id: a, image: a.png}]
    """
    manifest = write_manifest(tmp_path, body)
    assert run_manifest(manifest).statuses == {"a": "done"}
    entry = json.loads((tmp_path / "out" / "a.json").read_text())
    assert "fp8" not in entry["key_material"]["render"] and "fp8" not in entry["hardware"]
    # A GPU run with fp8 plans this job as changed: FP8 renders other pixels.
    [planned] = plan_run(load_run_spec(write_manifest(tmp_path, body.replace("{profile: cpu}", "{fp8: true}"))))
    assert (planned.status, planned.reason) == ("changed", "fp8 changed")
    assert json.loads(planned.material.canonical_json())["render"]["fp8"] is True
    assert planned.material.render_key != entry["render_key"] and planned.material.output_key == entry["output_key"]


def test_the_entry_records_fp8_and_an_old_entry_reads_as_without():
    hw = ResolvedHardware(profile="max-speed", device="cuda:0", dtype="float16", offload="none",
                          forward_chunking=False, decode_chunk_size=8, compile=True, fp8=True,
                          attention_backend="cudnn", compile_vae=True)
    dumped = hw.model_dump()
    assert (dumped["fp8"], dumped["attention_backend"], dumped["compile_vae"]) == (True, "cudnn", True)
    old = ResolvedHardware.model_validate({k: v for k, v in dumped.items()
                                           if k not in ("fp8", "attention_backend", "compile_vae")})
    assert (old.fp8, old.attention_backend, old.compile_vae) == (False, None, False)
    assert "fp8" not in old.model_dump()
    # The memory ladder cannot offload FP8 weights: it ends before offloading.
    while (lower := next_rung(hw)) is not None:
        hw = lower
    assert (hw.offload, hw.fp8, hw.decode_chunk_size) == ("none", True, 1)


def test_an_fp8_linear_is_close_to_the_float_one_and_comes_off_exactly():
    from diffusers.hooks import HookRegistry

    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 48)
    x = torch.randn(5, 7, 64)
    with torch.no_grad():
        exact = layer(x)
        registry = HookRegistry.check_if_exists_or_initialize(layer)
        registry.register_hook(Fp8LinearHook(torch.float32), "fp8")
        fp8 = layer(x)
        registry.remove_hook("fp8", recurse=False)
        assert torch.equal(layer(x), exact)
    assert fp8.shape == exact.shape and not torch.equal(fp8, exact)
    # e4m3 keeps 3 mantissa bits (relative rounding up to 1/16); a dot product of 64 such terms
    # averages much of that out.
    assert float((fp8 - exact).norm() / exact.norm()) < 0.05


def test_fp8_hooks_go_on_the_transformer_linears_and_render_near_the_float_frames():
    from svdflow.pipeline.render import render_frames, torch_threads
    from svdflow.pipeline.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    layers = fp8_layers(pipe.unet)
    names = {name for name, module in pipe.unet.named_modules() if any(module is layer for layer in layers)}
    assert names and not any("attn2" in n or "time_pos_embed" in n for n in names)
    assert any(n.endswith("attn1.to_q") for n in names) and any(n.endswith("ff.net.2") for n in names)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    params = JobParams(num_frames=2, num_inference_steps=2, width=64, height=64, playback_fps=7.0)
    with torch_threads(1):
        plain = render_frames(pipe, image, params)
        assert set_fp8(pipe.unet, True) == len(layers) == set_fp8(pipe.unet, True)
        fp8 = render_frames(pipe, image, params)
        assert set_fp8(pipe.unet, False) == 0
        again = render_frames(pipe, image, params)
    assert np.array_equal(again, plain) and fp8.shape == plain.shape and not np.array_equal(fp8, plain)
    assert np.abs(fp8.astype(int) - plain).mean() < 8  # near: a few levels of 255 on random weights
